"""PET and iPET (issue 12) against head fine-tuning and single-PVP prompt fine-tuning, on the same data.

For every (task, |T|, seed) the labelled set T, the unlabelled pool and the evaluation set
are drawn once and every method sees the same rows:

- head_finetune: a new classification head on the backbone, all weights trained on T;
- pvp_finetune: every PVP fine-tuned on T alone: PET's own generation-0 members, each scored
  on the evaluation rows (``Pet(evaluate_on=...)``), so it needs ``pet`` and costs no extra
  training; shown as the mean and the best over PVPs (best picked on the evaluation set: an
  optimistic bound);
- pet: the PET ensemble (PVPs x repetitions) labels the pool, distilled into one model;
- ipet: iPET (``--generations``), then the same distillation; generations the cell has trained
  already are loaded from ``--output-dir`` (``IPet(start_from=...)``): those of an iPET run with
  fewer generations, else generation 0 from the PET run;
- zero_shot_cf (|T| = 0 only): each untrained PVP, content-free calibrated; mean and best.

Pools: ag_news draws T (uniformly, as PET does; not class-balanced) and the unlabelled pool
from the test file, the only AG News file here, and evaluates on the disjoint rest;
sst2 draws 16 per class from train, the pool from the rest of train, and evaluates on dev;
rte trains on the 32 FewGLUE examples (the same for every seed: the seed changes the pool
and the training), the pool is SuperGLUE train without labels (FewGLUE rows excluded), and
it evaluates on val. |T| = 0 on ag_news runs iPET from zero labels and zero_shot_cf.

    python benchmarks/pet.py                                      # CPU-sized defaults
    python benchmarks/pet.py --tasks ag_news --sizes 10 --seeds 13 --methods pet --steps 5

Results (JSON, markdown, plot) are rewritten after every run; ``--merge`` reuses finished
runs of earlier files whose settings and rows match (until the grid reaches a cell, a merged
run of that cell is saved in its place, so a killed grid loses nothing merged). PET/iPET
keep finished members under ``--output-dir`` (one folder per run and settings), so a killed
run resumes there.
"""

from __future__ import annotations

import argparse
import gc
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, write_results  # noqa: E402
from _few_shot_methods import EVAL_BATCH, Backbones, Settings, Split, run_head_finetune  # noqa: E402
from _metrics import accuracy as accuracy_of  # noqa: E402
from _pet_data import SST2_PER_CLASS, draw_pools, load_files  # noqa: E402
from _pet_report import STD, aggregate, digest, earlier_runs, markdown, merge_key, plot  # noqa: E402

from promptkit import PromptModel, get_strategy  # noqa: E402
from promptkit.backbones import DEFAULT_BACKBONE  # noqa: E402
from promptkit.catalog import list_templates, load_template, load_verbalizer, paired_verbalizer  # noqa: E402
from promptkit.scoring import calibrated  # noqa: E402
from promptkit.tasks import get_task  # noqa: E402

logger = logging.getLogger("pet")
TASKS = ("ag_news", "sst2", "rte")
METHODS = ("head_finetune", "pvp_finetune", "pet", "ipet", "zero_shot_cf")
ZERO_LABEL_METHODS = ("ipet", "zero_shot_cf")  # the only ones run at |T| = 0 (zero_shot_cf only there)
SEEDS = (13, 21, 42)
# CPU default: three templates per task, mask at the end (one forward pass per example on a causal LM).
DEFAULT_PVPS = {
    "ag_news": ("ag_news/topic_end", "ag_news/about_end", "ag_news/category_end"),
    "sst2": ("sst2/it_was", "sst2/all_in_all", "sst2/review_sentiment"),
    "rte": ("rte/question_yes_no", "rte/true_or_false", "rte/question_true_false"),
}
RUNS = Path(__file__).resolve().parent / "runs"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--sizes", nargs="+", type=int, default=[0, 10, 50], help="ag_news |T| values (0: iPET only)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--pvps", nargs="+", default=None, metavar="NAME",
                   help="catalog templates (TASK/NAME), each with its paired verbalizer, or 'all'; "
                        "tasks named by none use the 3-template default")  # fmt: skip
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="alias or local transformers folder")
    p.add_argument("--repetitions", type=int, default=1, help="PET members per PVP (PET: 3)")
    p.add_argument("--unlabeled", type=int, default=300, help="unlabelled pool size")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per member / fine-tune / head run")
    p.add_argument("--distill-steps", type=int, default=30, help="optimizer steps of the PET/iPET distillation")
    p.add_argument("--batch-size", type=int, default=4, help="batch size of every training (PET: 4)")
    p.add_argument("--lr", type=float, default=2e-5, help="members, pvp_finetune and distillation learning rate")
    p.add_argument("--lr-head", type=float, default=2e-5, help="head_finetune learning rate")
    p.add_argument("--generations", type=int, default=2, help="iPET generations (iPET: 3)")
    p.add_argument("--scale-factor", type=int, default=5)
    p.add_argument("--sample-ratio", type=float, default=0.25)
    p.add_argument("--eval-limit", type=int, default=500, help="at most N evaluation rows (0: all)")
    p.add_argument("--max-length", type=int, default=256, help="most tokens per input")
    p.add_argument("--output-dir", type=Path, default=RUNS, help="PET/iPET member stores (resume)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--merge", nargs="*", type=Path, default=[], metavar="JSON", help="reuse matching finished runs")
    args = p.parse_args(argv)
    if min(args.steps, args.distill_steps, args.batch_size, args.repetitions, args.generations) < 1:
        p.error("--steps, --distill-steps, --batch-size, --repetitions and --generations must be >= 1")
    if min(args.sizes) < 0 or args.unlabeled < 1 or args.eval_limit < 0:
        p.error("--sizes must be >= 0, --unlabeled >= 1, --eval-limit >= 0")
    if "pvp_finetune" in args.methods and "pet" not in args.methods:
        p.error("--methods pvp_finetune is measured on the PET run's members: add pet")
    args.pvp_names = choose_pvps(p, args.tasks, args.pvps)
    return args


def choose_pvps(parser: argparse.ArgumentParser, tasks: list[str], names: list[str] | None) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {}
    for name in names or []:
        for task in tasks if name == "all" else [name.partition("/")[0]]:
            if name == "all":
                chosen[task] = list_templates(task)
            elif name not in list_templates(task if task in TASKS else None):
                parser.error(f"--pvps {name!r}: not a catalog template (TASK/NAME, e.g. sst2/it_was) or 'all'")
            elif name not in chosen.setdefault(task, []):
                chosen[task].append(name)
    return {task: chosen.get(task) or list(DEFAULT_PVPS[task]) for task in tasks}


def task_sizes(task: str, args: argparse.Namespace, files: dict) -> list[int]:
    if task == "ag_news":
        return list(dict.fromkeys(args.sizes))
    return [len(files["train"])] if task == "rte" else [SST2_PER_CLASS * len(get_task(task).labels)]


def applies(method: str, size: int) -> bool:
    return method in ZERO_LABEL_METHODS if size == 0 else method != "zero_shot_cf"


# ---------------------------------------------------------------- methods
def run_settings(args: argparse.Namespace, task: str, method: str, split: Split) -> dict:
    """Everything that decides one run's result besides (task, |T|, seed): the rows included."""
    rows = {name: [r.get("_pos") for r in getattr(split, name)] for name in ("train", "dev", "eval")}
    settings = {"backbone": args.backbone, "max_length": args.max_length, "rows": digest(rows)}
    if method != "head_finetune":
        settings["pvps"] = args.pvp_names[task]
    if method == "zero_shot_cf":
        return settings
    settings |= {"steps": args.steps, "batch_size": args.batch_size}
    settings["learning_rate"] = args.lr_head if method == "head_finetune" else args.lr
    if method in ("pet", "ipet"):
        settings |= {"repetitions": args.repetitions, "distill_steps": args.distill_steps}
    if method == "ipet":
        settings |= {"generations": args.generations, "scale_factor": args.scale_factor,
                     "sample_ratio": args.sample_ratio}  # fmt: skip
    return settings


def store_folder(args: argparse.Namespace, task: str, seed: int, method: str, split: Split) -> Path:
    """The PET/iPET member store of one run under ``--output-dir``, named by the settings its members depend on.

    ``--distill-steps`` is left out: runs that differ only there share the members and their
    ensemble, and only redo the distillation (e.g. a longer one, without retraining any member).
    """
    settings = {k: v for k, v in run_settings(args, task, method, split).items() if k != "distill_steps"}
    return args.output_dir / f"{task}_T{len(split.train)}_seed{seed}_{method}_{digest(settings, 8)}"


def start_folder(args: argparse.Namespace, task: str, seed: int, split: Split) -> Path | None:
    """The store iPET starts from: this cell's iPET run with the most generations short of ``--generations``,
    else (with labelled rows) its PET run, whose members are iPET's generation 0; None if neither ran."""
    shorter = [argparse.Namespace(**{**vars(args), "generations": g}) for g in range(args.generations - 1, 0, -1)]
    folders = [store_folder(a, task, seed, "ipet", split) for a in shorter]
    folders += [store_folder(args, task, seed, "pet", split)] if split.train else []
    return next((folder for folder in folders if (folder / "settings.json").exists()), None)


def _accuracy(rows: list[dict], predicted: list) -> float:
    return accuracy_of([row["label"] for row in rows], list(predicted))


def hidden_labels(split: Split, files: dict) -> list:
    """The labels the unlabelled pool's rows had in the data (their ``_pos`` in ``files["pool"]``)."""
    return [files["pool"][row["_pos"]]["label"] for row in split.dev]


def _pvps(names: list[str]) -> list[tuple]:
    return [(load_template(name), load_verbalizer(paired_verbalizer(name))) for name in names]


def run_method(
    method: str, task: str, seed: int, split: Split, backbones: Backbones, args, pool_labels: list | None = None
) -> dict:
    """Train and evaluate one run; its accuracy (and per-PVP variants) as a dict.

    ``pool_labels`` are the unlabelled pool's hidden labels (the data has them; the methods never
    see them): with them, a PET/iPET run also reports its ensemble's accuracy on the pool, so that
    the distillation's loss or gain against the ensemble it learns from can be read off.
    """
    member = {"learning_rate": args.lr, "max_steps": args.steps, "batch_size": args.batch_size, "seed": seed,
              "progress": False}  # fmt: skip
    if method == "head_finetune":
        options = Settings(args.steps, args.batch_size, 0, args.max_length, {"head_finetune": args.lr_head})
        labelled = Split(split.fields, split.train, [], split.eval)  # the pool has no labels: no dev set
        outcome = run_head_finetune(backbones, get_task(task).labels, labelled, options, seed)
        return {"accuracy": _accuracy(split.eval, outcome.predicted)}
    pvps = _pvps(args.pvp_names[task])

    def prompt_model(template, verbalizer) -> PromptModel:
        return PromptModel(backbones.lm, backbones.tokenizer, template, verbalizer, head=backbones.head,
                           max_length=args.max_length, batch_size=EVAL_BATCH)  # fmt: skip

    if method == "zero_shot_cf":
        per_pvp = {}
        for name, (template, verbalizer) in zip(args.pvp_names[task], pvps, strict=True):
            model = prompt_model(template, verbalizer)
            scores = calibrated(model.label_log_probs(split.eval), model.content_free_prior())
            per_pvp[name] = _accuracy(split.eval, [verbalizer.labels[i] for i in scores.argmax(-1).tolist()])
            del model
            gc.collect()
        return {"accuracy": float(np.mean(list(per_pvp.values()))), "per_pvp": per_pvp,
                "variants": _mean_best(per_pvp)}  # fmt: skip
    folder = store_folder(args, task, seed, method, split)
    extra = {"generations": args.generations, "scale_factor": args.scale_factor,
             "sample_ratio": args.sample_ratio} if method == "ipet" else {}  # fmt: skip
    start = start_folder(args, task, seed, split) if method == "ipet" else None
    if start is not None:
        extra["start_from"] = start  # generations this cell has trained already are not trained twice
    strategy = get_strategy(method, pvps=pvps, repetitions=args.repetitions, config=member,
                            distill_config={**member, "max_steps": args.distill_steps}, seed=seed,
                            output_dir=folder, evaluate_on=split.eval, **extra)  # fmt: skip
    model = strategy.fit(prompt_model(*pvps[0]).clone(), split.train, split.dev)
    accuracy = _accuracy(split.eval, model.predict(split.eval, progress=False))
    labels = model.verbalizer.labels
    pooled = [labels[i] for i in strategy.soft_labels_.argmax(-1)]  # the ensemble's hard labels of the pool
    ensemble = accuracy_of(pool_labels, pooled) if pool_labels is not None else None
    trained = [m for m in strategy.members_ if not m.get("error")]
    member_eval = [[m["generation"], m["pvp"], m["eval_accuracy"], m.get("seconds")] for m in trained]
    return {"accuracy": accuracy, "store": str(folder), "pvp_accuracies": strategy.pvp_accuracies_,
            "member_eval": member_eval, "pool_ensemble_accuracy": ensemble,
            "members": len(trained), "members_loaded": sum(bool(m.get("loaded")) for m in trained),
            "member_errors": [m["error"] for m in strategy.members_ if m.get("error")],
            "generations": strategy.generations_}  # fmt: skip


def _mean_best(per_pvp: dict[str, float]) -> dict[str, float]:
    values = list(per_pvp.values())
    return {"mean": float(np.mean(values)), "best": max(values)}


def pvp_finetune_row(pet_row: dict, names: list[str]) -> dict:
    """The single-PVP baseline, read off a PET run: each generation-0 member's accuracy on the evaluation rows.

    Those members are the PVPs fine-tuned on T alone with the members' settings, so this
    costs nothing extra and compares PET with the very models it combined (as PET's paper does).
    """
    first = [m for m in pet_row.get("member_eval") or [] if m[0] == 0]
    per_pvp = {name: float(np.mean([m[2] for m in first if m[1] == p])) for p, name in enumerate(names)
               if any(m[1] == p for m in first)}  # fmt: skip
    seconds = [m[3] for m in first if m[3] is not None]
    row = {k: pet_row[k] for k in ("task", "size", "seed", "settings", "n_train", "n_unlabeled", "n_eval",
                                   "peak_rss_mib", "reused")}  # fmt: skip
    if pet_row.get("error") or not per_pvp:
        return {**row, "method": "pvp_finetune", "accuracy": None, "seconds": 0.0,
                "error": pet_row.get("error") or "the PET run has no evaluated members"}  # fmt: skip
    return {**row, "method": "pvp_finetune", "accuracy": float(np.mean(list(per_pvp.values()))),
            "per_pvp": per_pvp, "variants": _mean_best(per_pvp), "error": None,
            "seconds": float(np.mean(seconds)) if seconds else 0.0}  # fmt: skip


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------- grid
def notes_for(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    settings = [
        f"backbone {args.backbone}; seeds {args.seeds}; max length {args.max_length} tokens",
        f"members, pvp_finetune and head_finetune: {args.steps} steps of batch {args.batch_size}, "
        f"lr {args.lr} (head {args.lr_head}); PET repetitions {args.repetitions} per PVP; distillation "
        f"{args.distill_steps} steps (temperature 2, weighting wmean); iPET {args.generations} generations, "
        f"scale factor {args.scale_factor}, sample ratio {args.sample_ratio}",
        f"unlabelled pool {args.unlabeled} rows; evaluation at most {args.eval_limit or 'all'} rows",
        *[f"{task} PVPs: {', '.join(names)} (paired verbalizers)" for task, names in args.pvp_names.items()],
    ]
    notes = ["no dev set: every method is evaluated at its last step (PET's setting)."]
    if "ag_news" in args.tasks:
        notes.append("ag_news: only its test file exists here; T (uniform, not class-balanced) and the unlabelled "
                     "pool are drawn from it with the seed, and accuracy is on a disjoint part of it (T is the "
                     f"front of a seeded order, the pool and evaluation rows follow its first {max(args.sizes)} "
                     "rows = max(--sizes), so they depend on the largest |T| of the run).")  # fmt: skip
    if "sst2" in args.tasks:
        notes.append(f"sst2: T = {SST2_PER_CLASS} per class from train, pool from the rest of train, eval on dev.")
    if "rte" in args.tasks:
        notes.append("rte: T = FewGLUE's 32 (same for every seed), pool = SuperGLUE train less T, eval on val.")
    notes.append("pvp_finetune / zero_shot_cf (best): the PVP best on the evaluation set itself (optimistic).")
    if "ipet" in args.methods:
        notes.append("ipet starts from the generations the same cell has run (IPet(start_from=...)): "
                     "generation 0 from its PET run, or those of an iPET run with fewer generations; "
                     "its wall time is the rest.")  # fmt: skip
    return settings, notes


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.rows = args, []
        self.earlier = earlier_runs(args.merge)
        self.planned: set[tuple] = set()
        self._backbones: Backbones | None = None

    def standing_in(self) -> list[dict]:
        """Merged runs of grid cells not reached yet: saved meanwhile, so a killed grid loses nothing merged."""
        done = {(r["task"], r["size"], r["seed"], r["method"]) for r in self.rows}
        cells = self.planned - done
        return [
            {**r, "reused": True}
            for r in self.earlier.values()
            if (r["task"], r["size"], r["seed"], r["method"]) in cells
        ]

    @property
    def backbones(self) -> Backbones:
        if self._backbones is None:  # nothing loaded when every run is merged
            self._backbones = Backbones(self.args.backbone)
        return self._backbones

    def run(self, save) -> None:
        files = {task: load_files(task, self.args.sizes) for task in self.args.tasks}
        self.planned = {
            (task, size, seed, method)
            for task in self.args.tasks
            for size in task_sizes(task, self.args, files[task])
            for seed in self.args.seeds
            for method in self.args.methods
            if applies(method, size)
        }
        for task in self.args.tasks:
            for size in task_sizes(task, self.args, files[task]):
                for seed in self.args.seeds:
                    split = draw_pools(task, size, seed, self.args.unlabeled, self.args.eval_limit, files[task])
                    for method in (m for m in self.args.methods if applies(m, size) and m != "pvp_finetune"):
                        row = self.run_one(task, size, seed, method, split, hidden_labels(split, files[task]))
                        if method == "pet" and "pvp_finetune" in self.args.methods:
                            self.rows.append(pvp_finetune_row(row, self.args.pvp_names[task]))
                        save()

    def run_one(self, task: str, size: int, seed: int, method: str, split: Split, pool_labels: list) -> dict:
        settings = run_settings(self.args, task, method, split)
        about = {"task": task, "size": size, "seed": seed, "method": method, "settings": settings}
        earlier = self.earlier.get(merge_key(about))
        if earlier is not None:
            logger.info("%s |T|=%d seed=%d %s: reused from --merge", task, size, seed, method)
            self.rows.append({**earlier, "reused": True})
            return self.rows[-1]
        sizes = {"n_train": len(split.train), "n_unlabeled": len(split.dev), "n_eval": len(split.eval)}
        backbones = self.backbones  # loading is not part of a run's time
        start = time.perf_counter()
        try:
            result = run_method(method, task, seed, split, backbones, self.args, pool_labels)
            error = None
        except Exception as err:  # noqa: BLE001 - one failing run must not end the grid
            logger.exception("%s |T|=%d seed=%d %s failed", task, size, seed, method)
            result, error = {"accuracy": None}, f"{type(err).__name__}: {err}"
        seconds = time.perf_counter() - start
        row = {**about, **result, **sizes, "seconds": seconds, "peak_rss_mib": peak_rss_mib(), "error": error,
               "reused": False}  # fmt: skip
        logger.info("%s |T|=%d seed=%d %s: accuracy %s in %.0f s", task, size, seed, method, row["accuracy"], seconds)
        self.rows.append(row)
        gc.collect()
        return row


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name, out = f"pet_{Path(args.backbone).name}", args.out or RESULTS
    settings_lines, notes = notes_for(args)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("merge", "pvps")}
    runner = Runner(args)

    def save() -> dict:
        rows = runner.rows + runner.standing_in()
        aggregates = aggregate(rows)
        table = markdown(aggregates, settings_lines, notes)
        payload = {"config": config, "environment": environment(), "settings": settings_lines, "notes": notes,
                   "std": STD, "peak_rss": "ru_maxrss of the process after the run: the peak so far, not per run",
                   "runs": rows, "aggregates": aggregates}  # fmt: skip
        write_results(name, payload, table, out)
        plot(aggregates, out / f"{name}.png", f"PET / iPET, {args.backbone}")
        return {**payload, "table": table}

    runner.run(save)
    payload = save()
    print(f"\n{payload.pop('table')}\n\nwrote {out / name}.json")
    return payload


if __name__ == "__main__":
    main()
