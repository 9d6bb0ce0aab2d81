"""The benchmark-task table and the readers of its files.

Rows are plain dicts with the task's normalised text fields, ``"label"`` (``None`` on
unlabeled splits) and ``"idx"`` where the file has one. Text fields are stripped of
leading/trailing whitespace (SST-2 has a space before each tab).

AG News text goes through :func:`clean_ag_news_text`. The CSV marks line breaks with a
bare backslash (``second\\team``; ``\\\\`` between paragraphs; not ``\\n`` as its
readme says), writes dollar signs as ``\\$``, has HTML entities (``&lt;``) and entity
remnants whose ``&`` became a space (``Japan #39;s``, ``AT amp;T``, `` quot;``). We map
``\\$`` to ``$``, other backslash runs to a space, both entity forms to their
characters, and collapse whitespace; HTML tags such as ``<b>...</b>`` are kept.

Where the files come from (``$PROMPTKIT_DATA``, a ``shared/data`` folder, the per-user cache
or the Hugging Face hub) is decided per split by :mod:`promptkit.data`; a split that only the
hub has (e.g. ``ag_news/train``) still has a path here, the place to put its file by hand.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptkit.errors import DataError, DataUnavailableError, did_you_mean

logger = logging.getLogger(__name__)

ENV_VAR = "PROMPTKIT_DATA"
_RENAMES = {"sentence": "text", "index": "idx", "sentence1": "premise", "sentence2": "hypothesis"}
_NLI = ("premise", "hypothesis")
_ENTITY_REMNANT = re.compile(r"(?:^| )(#\d+|quot|amp|lt|gt|hellip);")
_BOOLS = {"true": True, "false": False}
_SG = {
    "train": "superglue/train.jsonl",
    "val": "superglue/val.jsonl",
    "test": "superglue/test.jsonl",
    "fewglue_train": "fewglue/train.jsonl",
    "fewglue_dev32": "fewglue_32dev/dev32.jsonl",
}


@dataclass(frozen=True)
class TaskInfo:
    """A benchmark task: label set, text fields and split files (relative to the data root)."""

    name: str
    labels: tuple
    fields: tuple[str, ...]
    splits: dict[str, str] = field(hash=False)
    description: str
    default_eval_split: str
    default_train_split: str | None = None
    unlabeled_splits: tuple[str, ...] = ()
    drop_invalid_labels: bool = False


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo(
            "sst2",
            (0, 1),
            ("text",),
            {s: f"sst2/{s}.tsv" for s in ("train", "dev", "test")},
            "SST-2 binary sentiment (0 negative, 1 positive)",
            "dev",
            "train",
            ("test",),
        ),
        TaskInfo(
            "ag_news",
            (1, 2, 3, 4),
            ("title", "description"),
            {"test": "ag_news/test.csv", "train": "ag_news/train.csv"},
            "AG News topics (1 World, 2 Sports, 3 Business, 4 Sci/Tech)",
            "test",
        ),
        TaskInfo(
            "rte",
            ("entailment", "not_entailment"),
            _NLI,
            {k: f"rte/{v}" for k, v in _SG.items()},
            "RTE textual entailment (SuperGLUE)",
            "val",
            "train",
            ("test",),
        ),
        TaskInfo(
            "cb",
            ("entailment", "contradiction", "neutral"),
            _NLI,
            {k: f"cb/{v}" for k, v in _SG.items()},
            "CommitmentBank (SuperGLUE)",
            "val",
            "train",
            ("test",),
        ),
        TaskInfo(
            "boolq",
            (False, True),
            ("passage", "question"),
            {k: f"boolq/{_SG[k]}" for k in ("val", "fewglue_train", "fewglue_dev32", "train")},
            "BoolQ yes/no questions (SuperGLUE)",
            "val",
            "fewglue_train",
        ),
        TaskInfo(
            "mnli",
            ("entailment", "neutral", "contradiction"),
            _NLI,
            {s: f"mnli/{s}.jsonl" for s in ("dev_matched", "dev_mismatched", "train")},
            "MultiNLI dev-matched",
            "dev_matched",
        ),
        TaskInfo(
            "snli",
            ("entailment", "neutral", "contradiction"),
            _NLI,
            {s: f"snli/{s}.jsonl" for s in ("dev", "train", "test")},
            "SNLI 1.0 dev (no-consensus '-' rows dropped)",
            "dev",
            drop_invalid_labels=True,
        ),
    )
}


# TNEWS's 15 label codes (no 105, 111) with their names, as in FewCLUE's label_index2en2zh.json.
TNEWS_LABEL_NAMES: dict[int, tuple[str, str]] = {
    100: ("news_story", "故事"),
    101: ("news_culture", "文化"),
    102: ("news_entertainment", "娱乐"),
    103: ("news_sports", "体育"),
    104: ("news_finance", "财经"),
    106: ("news_house", "房产"),
    107: ("news_car", "汽车"),
    108: ("news_edu", "教育"),
    109: ("news_tech", "科技"),
    110: ("news_military", "军事"),
    112: ("news_travel", "旅游"),
    113: ("news_world", "国际"),
    114: ("news_stock", "股票"),
    115: ("news_agriculture", "农业"),
    116: ("news_game", "电竞"),
}
_TNEWS_CODES = tuple(TNEWS_LABEL_NAMES)


def _fewclue_splits(task: str, extra: tuple[str, ...]) -> dict[str, str]:
    """FewCLUE's split files of one task, then CLUE's full splits (hub-only here)."""
    names = [f"{kind}_{i}" for kind in ("train", "dev") for i in range(5)]
    names += ["train_few_all", "dev_few_all", "test_public", "test", *extra]
    splits = {name: f"fewclue/{task}/{name}.json" for name in names}
    splits.update({f"clue_{name}": f"clue/{task}/{name}.json" for name in ("train", "dev", "test")})
    return splits


# FewCLUE's TNEWS and OCNLI (Chinese), read from ``fewclue/<task>/*.json`` like the tasks above
# and mapped onto CLUE's copies on the Hugging Face hub (``clue_train``/``clue_dev``/``clue_test``).
# Splits: the five few-shot pairs ``train_0..4`` / ``dev_0..4`` (index i pairs with index i),
# their unions ``*_few_all``, ``test_public`` (labelled: evaluate on it), ``test`` (leaderboard,
# no labels) and, for TNEWS, the ``unlabeled`` pool. Registered in TASKS below, with the
# catalog's Chinese templates (templates/tnews.yaml, templates/ocnli.yaml).
FEWCLUE_TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo(
            "tnews",
            _TNEWS_CODES,
            ("text",),
            _fewclue_splits("tnews", ("unlabeled",)),
            "TNEWS Chinese news-title topics, FewCLUE (15 codes 100-116; names in TNEWS_LABEL_NAMES)",
            "test_public",
            "train_0",
            ("test", "unlabeled", "clue_test"),
        ),
        TaskInfo(
            "ocnli",
            ("entailment", "neutral", "contradiction"),
            _NLI,
            _fewclue_splits("ocnli", ()),
            "OCNLI Chinese NLI, FewCLUE (rows without a gold label dropped)",
            "test_public",
            "train_0",
            ("test", "clue_test"),
            drop_invalid_labels=True,
        ),
    )
}
TASKS.update(FEWCLUE_TASKS)


def _unknown(kind: str, value: object, valid: Iterable[object]) -> str:
    """Build an 'unknown name' message listing valid choices and the closest match."""
    names = [str(v) for v in valid]
    return f"Unknown {kind} {value!r}; valid: {', '.join(names)}.{did_you_mean(value, names)}"


def data_root() -> Path:
    """Return the benchmark data folder.

    Uses ``$PROMPTKIT_DATA`` if set, else the first ``<ancestor>/shared/data`` folder
    found above the current directory or above this file.

    Example:
        >>> (data_root() / "sst2").is_dir()  # doctest: +SKIP
        True
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(
                f"${ENV_VAR}={env!r} is not a directory; point it at the folder "
                "holding sst2/, ag_news/, ... or unset it."
            )
        return path
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for ancestor in (start, *start.parents):
            if (ancestor / "shared" / "data").is_dir():
                return ancestor / "shared" / "data"
    raise DataUnavailableError(
        f"No 'shared/data' folder found above {Path.cwd()} or {Path(__file__).parent}; "
        f"set ${ENV_VAR} to the benchmark data folder."
    )


def list_tasks() -> list[str]:
    """Return the registered task names, sorted.

    Example:
        >>> "sst2" in list_tasks()
        True
    """
    return sorted(TASKS)


def get_task(name: str | TaskInfo) -> TaskInfo:
    """Return the :class:`TaskInfo` for ``name`` (a :class:`TaskInfo` is returned as is).

    Example:
        >>> get_task("rte").labels
        ('entailment', 'not_entailment')
    """
    if isinstance(name, TaskInfo):
        return name
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise DataError(_unknown("task", name, list_tasks())) from None


def clean_ag_news_text(text: str) -> str:
    """Undo AG News escaping: ``\\$`` -> ``$``, other backslash runs -> space, entity remnants.

    Example:
        >>> clean_ag_news_text("Japan #39;s \\\\$5 deal\\\\new  plan")
        "Japan's $5 deal new plan"
    """
    text = html.unescape(text.replace("\\$", "$"))
    text = re.sub(r"\\+", " ", text)
    text = _ENTITY_REMNANT.sub(lambda m: html.unescape(f"&{m[1]};"), text)
    return " ".join(text.split())


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Yield raw rows (source column names) from a .tsv, header-less AG News .csv or .jsonl."""
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix == ".tsv":
            yield from csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        elif path.suffix == ".csv":
            for rec in csv.reader(handle):
                yield dict(zip(("label", "title", "description"), rec))
        else:
            for line_no, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise DataError(f"{path}:{line_no} is not valid JSON ({err}).") from None


def _coerce_label(raw: Any, labels: tuple) -> Any:
    """Map a raw file label onto the task's label type; return ``...`` if it is not valid."""
    kind = type(labels[0])
    if kind is bool:
        value = raw if isinstance(raw, bool) else _BOOLS.get(str(raw).lower())
    elif kind is int and not isinstance(raw, bool):
        value = int(raw) if str(raw).strip().lstrip("-").isdigit() else None
    else:
        value = raw.strip() if isinstance(raw, str) else None
    return value if value is not None and value in labels else ...


def _normalise(raw: dict[str, Any], task: TaskInfo, labeled: bool, where: str) -> dict[str, Any] | None:
    """Turn one raw row into a normalised row; ``None`` if it must be dropped."""
    raw = {_RENAMES.get(k, k): v for k, v in raw.items()}
    row: dict[str, Any] = {}
    for name in task.fields:
        if not isinstance(raw.get(name), str):
            raise DataError(f"{where}: field {name!r} missing or not text; row has {sorted(raw)}.")
        text = raw[name].strip()
        row[name] = clean_ag_news_text(text) if task.name == "ag_news" else text
    row["label"] = None
    if labeled:
        label = _coerce_label(raw.get("label"), task.labels)
        if label is ...:
            if task.drop_invalid_labels:
                return None
            raise DataError(f"{where}: label {raw.get('label')!r} is not one of {task.labels}.")
        row["label"] = label
    if "idx" in raw:
        row["idx"] = int(raw["idx"])
    return row


def load_task(
    name: str | TaskInfo, split: str | None = None, *, root: str | Path | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Load one split of a task as a list of normalised row dicts.

    Without ``root`` the split comes from the first source that has it, in this order:
    ``$PROMPTKIT_DATA``, a ``shared/data`` folder above the working directory or the
    package, the per-user cache (``$PROMPTKIT_CACHE/data``), and the Hugging Face hub
    (``pip install "promptkit[data]"``; downloaded once into the cache).
    :func:`promptkit.data.where` tells which one that is.

    Args:
        name: task name (see :func:`list_tasks`) or a :class:`TaskInfo`.
        split: split name; defaults to the task's ``default_eval_split``.
        root: data folder; only this folder is read (no cache, no hub).
        limit: keep only the first ``limit`` rows (after any dropped rows).

    Raises:
        promptkit.data.DataUnavailableError: no source has the split (a
            :class:`DataError` naming the three ways to get it).

    Example:
        >>> load_task("sst2", "dev", limit=1)  # doctest: +SKIP
        [{'text': "it 's a charming and often affecting journey .", 'label': 1}]
    """
    task = get_task(name)
    split = task.default_eval_split if split is None else split
    if split not in task.splits:
        raise DataError(_unknown(f"split of task {task.name!r}", split, task.splits))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise DataError(f"limit must be a non-negative int or None, got {limit!r}.")
    if root is None:
        from promptkit import data

        return data.read_split(task, split, limit)
    path = Path(root) / task.splits[split]
    if not path.is_file():
        raise DataError(
            f"Data file for {task.name}/{split} not found: {path}. "
            f"Set ${ENV_VAR} (or pass root=) to the folder that holds "
            f"{task.splits[split]}."
        )
    return read_file(task, split, path, limit)


def read_file(task: TaskInfo, split: str, path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Read one split file in the task's own format (see the module docstring) into rows.

    Example:
        >>> read_file(get_task("sst2"), "dev", data_root() / "sst2" / "dev.tsv", limit=1)  # doctest: +SKIP
        [{'text': "it 's a charming and often affecting journey .", 'label': 1}]
    """
    labeled, kept, dropped = split not in task.unlabeled_splits, [], 0
    for line_no, raw in enumerate(_read_rows(path), 1):
        if limit is not None and len(kept) >= limit:
            break
        row = _normalise(raw, task, labeled, f"{path}:{line_no}")
        if row is None:
            dropped += 1
        else:
            kept.append(row)
    if task.drop_invalid_labels:
        logger.info("%s/%s: dropped %d rows with labels outside %s", task.name, split, dropped, task.labels)
    logger.debug("Loaded %d rows from %s", len(kept), path)
    return kept
