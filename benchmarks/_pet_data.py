"""benchmarks/pet.py's pools: the labelled set T, the unlabelled pool and the evaluation rows of each run.

Every method of one (task, |T|, seed) sees the same rows; see :func:`draw_pools`.
"""

from __future__ import annotations

import random

from _few_shot_methods import Split

from promptkit import load_task, sample_k_shot
from promptkit.tasks import get_task

SST2_PER_CLASS = 16


def _positions(rows: list[dict]) -> list[dict]:
    return [{**row, "_pos": i} for i, row in enumerate(rows)]


def _unlabeled(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "label"} for row in rows]


def draw_pools(task: str, size: int, seed: int, n_unlabeled: int, eval_limit: int, files: dict) -> Split:
    """T, the unlabelled pool (labels dropped) and the evaluation rows of one (task, |T|, seed); pairwise disjoint.

    ``files`` holds the task's rows, each with its position ``_pos``: ``pool`` (T and the
    unlabelled rows are drawn from it), ``eval`` (None: the rest of ``pool``), ``train`` (a fixed T).
    The unlabelled pool and the evaluation rows of ag_news do not depend on |T| (T is taken from a
    reserved front of a seeded permutation), so every |T| of a seed is evaluated on the same rows.
    """
    pool, rng = files["pool"], random.Random(seed)
    if files.get("train") is not None:  # rte: FewGLUE's T
        train = files["train"]
        seen = {(r["premise"], r["hypothesis"]) for r in train}
        rest = [r for r in pool if (r["premise"], r["hypothesis"]) not in seen]
    elif files["eval"] is None:  # ag_news: one file
        order = rng.sample(range(len(pool)), len(pool))
        reserve = max(files["max_size"], size)
        train = [pool[i] for i in order[:size]]
        rest = [pool[i] for i in order[reserve:]]
    else:  # sst2: 16 per class from train
        train = sample_k_shot(pool, SST2_PER_CLASS, seed=seed)
        taken = {r["_pos"] for r in train}
        rest = [r for r in pool if r["_pos"] not in taken]
    if files["eval"] is None:
        unlabeled, evaluation = rest[:n_unlabeled], rest[n_unlabeled:]
    else:
        unlabeled, evaluation = rng.sample(rest, min(n_unlabeled, len(rest))), files["eval"]
    evaluation = evaluation[:eval_limit] if eval_limit else evaluation
    return Split(get_task(task).fields, train, _unlabeled(unlabeled), evaluation)


def load_files(task: str, sizes: list[int]) -> dict:
    if task == "ag_news":
        return {"pool": _positions(load_task(task, "test")), "eval": None, "max_size": max(sizes)}
    if task == "sst2":
        return {"pool": _positions(load_task(task, "train")), "eval": _positions(load_task(task, "dev"))}
    return {"pool": _positions(load_task(task, "train")), "eval": _positions(load_task(task, "val")),
            "train": _positions(load_task(task, "fewglue_train"))}  # fmt: skip
