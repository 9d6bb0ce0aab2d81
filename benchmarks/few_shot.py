"""Few-shot accuracy against K: prompt-based methods vs head fine-tuning and SetFit.

LM-BFF's protocol (Gao et al. 2021): for each seed draw K training and K dev examples per
class from the training set, train, and evaluate on the full evaluation split; report mean
and std over the seeds 13, 21, 42, 87, 100. AG News ships only its test file here, so its
K-shot sets are drawn from the test file and it is evaluated on the disjoint remainder.

FewCLUE's Chinese tasks (tnews, ocnli) come with their own five few-shot sets instead: seed
13, 21, 42, 87, 100 trains on FewCLUE's ``train_0`` ... ``train_4`` and selects on the
paired ``dev_0`` ... ``dev_4`` (the seed also seeds training), and every run is evaluated on
``test_public``. ``--k`` does not apply to them (TNEWS's sets have 16 per class, OCNLI's 32
rows in all); their runs have ``k = "fewclue"``, a column of its own in the table.

Methods: zero_shot (no training), prompt_finetune (LM-BFF, all weights), soft_prompt
(prompt tuning, backbone frozen), lora (prompt fine-tuning of LoRA adapters), head_finetune
(AutoModelForSequenceClassification on the same backbone, same data, steps and batch size)
and setfit (SetFit on all-MiniLM-L6-v2; needs ``pip install 'promptkit[benchmarks]'``).
prefix_tuning (P-tuning v2, causal LMs) runs when named in ``--methods``.

Each trained run gets a fresh copy of the pretrained weights. With ``--eval-every N`` > 0
(the default) the dev set picks the best checkpoint among evaluations every N steps (and
the last), for every method but SetFit, whose own recipe has no dev selection.

    python benchmarks/few_shot.py                                  # K=16, all tasks, methods, seeds
    python benchmarks/few_shot.py --k 4 8 16 32 64 --tasks sst2 rte
    python benchmarks/few_shot.py --tasks sst2 --seeds 13 --eval-limit 200 --methods zero_shot lora
    python benchmarks/few_shot.py --tasks tnews ocnli --backbone gemma3-270m \
        --methods zero_shot prompt_finetune head_finetune    # FewCLUE's five train/dev pairs

Results are rewritten after every run, so a killed grid loses one run at most. ``--merge``
reads earlier result files and reuses every run whose settings match this invocation's
(resume a grid, or combine grids run in parallel processes); the rest is run.

    python benchmarks/few_shot.py --tasks sst2 --merge benchmarks/results/few_shot_smollm2-135m.json

Accuracy, macro-F1 and each run's confusion matrix come from ``sklearn.metrics``. A PNG next to
the JSON plots accuracy per method (one K: bars with mean ± std and a dot per seed; several
K: accuracy against K); ``--replot`` redraws it from an earlier results file alone.

    python benchmarks/few_shot.py --replot benchmarks/results/few_shot_smollm2-135m_sst2.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, write_results  # noqa: E402
from _few_shot_methods import (  # noqa: E402
    DEFAULT_METHODS,
    METHODS,
    PROMPT_METHODS,
    Backbones,
    MethodUnavailable,
    Outcome,
    Settings,
    Split,
    run_head_finetune,
    run_prompt_method,
    run_setfit,
)
from _few_shot_report import aggregate, markdown, plot  # noqa: E402
from _metrics import classification_scores  # noqa: E402

from promptkit import load_task, sample_k_shot  # noqa: E402
from promptkit.backbones import DEFAULT_BACKBONE  # noqa: E402
from promptkit.catalog import list_templates, load_template, load_verbalizer, paired_verbalizer  # noqa: E402
from promptkit.demonstrations import with_demonstrations  # noqa: E402
from promptkit.tasks import get_task  # noqa: E402

logger = logging.getLogger("few_shot")
DEFAULT_TASKS = ("sst2", "rte", "cb", "ag_news")
FEWCLUE = ("tnews", "ocnli")  # their own few-shot sets, one pair per seed
TASKS = (*DEFAULT_TASKS, *FEWCLUE)
KS = (4, 8, 16, 32, 64)
SEEDS = (13, 21, 42, 87, 100)  # LM-BFF's
FEWCLUE_PAIR = dict(zip(SEEDS, range(5)))  # seed -> FewCLUE's train_i / dev_i
FEWCLUE_K = "fewclue"  # the "K" of a run on FewCLUE's own sets
# (train split, evaluation split); AG News: the same file, evaluated on the rows not sampled.
SPLITS = {"sst2": ("train", "dev"), "rte": ("train", "val"), "cb": ("train", "val"), "ag_news": ("test", "test"),
          "tnews": ("train_<i>", "test_public"), "ocnli": ("train_<i>", "test_public")}  # fmt: skip
# Catalog templates with the mask at the end: one forward pass per example for a causal LM.
TEMPLATES = {
    "sst2": "sst2/review_sentiment",
    "rte": "rte/question_yes_no",
    "cb": "cb/question_yes_no_maybe",
    "ag_news": "ag_news/topic_end",
    "tnews": "tnews/category_end",
    "ocnli": "ocnli/question_end",
}
# For a 135M LM at 100 steps of 8: full fine-tuning a little above LM-BFF's 1e-5 (fewer steps);
# LoRA and soft prompts train few parameters and need far higher rates.
LEARNING_RATES = {"prompt_finetune": 2e-5, "soft_prompt": 3e-2, "lora": 5e-4, "prefix_tuning": 1e-2,
                  "head_finetune": 2e-5, "setfit": 2e-5}  # fmt: skip
AG_NEWS_NOTE = (
    "AG News has only its test file here: the K-shot train and dev sets are drawn from it and "
    "accuracy is measured on the disjoint remainder of the test file."
)
FEWCLUE_NOTE = (
    "tnews / ocnli (FewCLUE): column 'FewCLUE sets': seed 13, 21, 42, 87, 100 trains on FewCLUE's train_0 ... "
    "train_4 and selects on dev_0 ... dev_4 (TNEWS 16 per class, OCNLI 32 rows); evaluated on test_public."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fewclue_help = f"default {' '.join(DEFAULT_TASKS)}; {' '.join(FEWCLUE)} use FewCLUE's own sets"
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(DEFAULT_TASKS), help=fewclue_help)
    parser.add_argument("--k", nargs="*", type=int, choices=KS, default=[16], help="examples per class")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--template", nargs="*", default=[], metavar="TASK=NAME",
                        help="override a task's catalog template, e.g. sst2=sst2/it_was")  # fmt: skip
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per trained run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=25, help="dev-set checkpoint selection; 0 = off")
    parser.add_argument("--eval-limit", type=int, default=None, help="first N evaluation examples only")
    parser.add_argument("--max-length", type=int, default=256, help="most tokens per input")
    for method, rate in LEARNING_RATES.items():
        parser.add_argument(f"--lr-{method.replace('_', '-')}", type=float, default=rate)
    parser.add_argument("--freeze-embeddings", action="store_true",
                        help="prompt_finetune: keep the token embeddings (and tied output rows) fixed")  # fmt: skip
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank (alpha = 2r)")
    parser.add_argument("--demonstrations", type=int, default=0, metavar="N",
                        help="prompt methods: N fixed in-context demonstrations per class from train")  # fmt: skip
    parser.add_argument("--soft-tokens", type=int, default=20, help="soft-prompt positions before the template")
    parser.add_argument("--prefix-tokens", type=int, default=16, help="prefix_tuning: key/value pairs per layer")
    parser.add_argument(
        "--zero-shot-calibrate",
        choices=("none", "content_free"),
        default="none",
        help="none = LM-BFF's zero-shot row; content_free = contextual calibration",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--merge", nargs="*", type=Path, default=[], metavar="JSON",
                        help="earlier results of this script: runs with matching settings are reused")  # fmt: skip
    parser.add_argument("--replot", nargs="+", type=Path, default=[], metavar="JSON",
                        help="only redraw the PNG next to each of these result files, then exit")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.k:
        parser.error("--k needs at least one of 4 8 16 32 64")
    if args.steps < 1 or args.batch_size < 1 or args.eval_every < 0 or args.demonstrations < 0:
        parser.error("--steps and --batch-size must be >= 1, --eval-every and --demonstrations >= 0")
    other = [seed for seed in args.seeds if seed not in FEWCLUE_PAIR]
    if other and any(task in FEWCLUE for task in args.tasks):
        parser.error(f"--seeds {other}: FewCLUE's tasks have five fixed train/dev pairs, one per seed of {SEEDS}")
    args.templates = {**TEMPLATES, **_template_overrides(parser, args.template)}
    return args


def _template_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        task, sep, name = item.partition("=")
        if not sep or task not in TASKS:
            parser.error(f"--template {item!r}: expected TASK=NAME with TASK one of {list(TASKS)}")
        name = name if "/" in name else f"{task}/{name}"
        if name not in list_templates(task):
            parser.error(f"--template {item!r}: unknown template; {task} has {list_templates(task)}")
        out[task] = name
    return out


def load_pool(task: str) -> tuple[list[dict], list[dict] | None]:
    """The rows K-shot sets are drawn from (each with its position ``_pos``), and the fixed eval set.

    The eval set is None where it is the remainder of the pool (AG News).
    """
    train_split, eval_split = SPLITS[task]
    pool = [{**row, "_pos": i} for i, row in enumerate(load_task(task, train_split))]
    return pool, None if eval_split == train_split else load_task(task, eval_split)


def fewclue_split(task: str, seed: int, fixed_eval: list[dict], limit: int | None) -> Split:
    """FewCLUE's own pair for the seed: ``train_i`` to train on, ``dev_i`` to select on, ``test_public`` to score."""
    pair = FEWCLUE_PAIR[seed]
    train, dev = load_task(task, f"train_{pair}"), load_task(task, f"dev_{pair}")
    return Split(get_task(task).fields, train, dev, fixed_eval[:limit] if limit else fixed_eval)


def draw(task: str, pool: list[dict], fixed_eval: list[dict] | None, k: int, seed: int, limit: int | None) -> Split:
    """K per class for train, then K per class for dev from the rest (LM-BFF); classes short of K give all they have."""
    train = sample_k_shot(pool, k, seed=seed, allow_fewer=True)
    taken = {row["_pos"] for row in train}
    dev = sample_k_shot([r for r in pool if r["_pos"] not in taken], k, seed=seed, allow_fewer=True)
    taken |= {row["_pos"] for row in dev}
    evaluation = fixed_eval if fixed_eval is not None else [r for r in pool if r["_pos"] not in taken]
    return Split(get_task(task).fields, train, dev, evaluation[:limit] if limit else evaluation)


def short_classes(task: str, k: int, split: Split) -> list[str]:
    """Notes on train/dev sets with fewer than K examples of a class (CB has 16 'neutral' training rows)."""
    notes = []
    for name, rows in (("train", split.train), ("dev", split.dev)):
        counts = Counter(r["label"] for r in rows)
        short = {str(label): counts[label] for label in get_task(task).labels if counts[label] < k}
        if short:
            notes.append(f"{task} K={k}: the {name} set has fewer than K examples of {short} (all there were).")
    return notes


def scores(task: str, rows: list[dict], predicted: list) -> dict:
    """Accuracy, macro-F1 and the confusion matrix (rows true, columns predicted, in the task's label order)."""
    return classification_scores([row["label"] for row in rows], predicted, get_task(task).labels)


def run_config(args: argparse.Namespace) -> dict:
    """The invocation's settings as saved in the results JSON (what ``run_settings`` reads back)."""
    config = {k: v for k, v in vars(args).items() if k not in ("out", "template", "templates", "merge")}
    config["templates"] = {task: args.templates[task] for task in args.tasks}
    config["splits"] = {task: dict(zip(("train", "eval"), SPLITS[task])) for task in args.tasks}
    pairs = {str(seed): f"train_{i} / dev_{i}" for seed, i in FEWCLUE_PAIR.items() if seed in args.seeds}
    for task in set(args.tasks) & set(FEWCLUE):
        config["splits"][task] |= {"dev": "dev_<i>", "pairs": pairs}
    return config


def run_settings(config: dict, task: str, method: str) -> dict:
    """Everything that decides one run's result besides (task, K, seed): two runs match when these are equal."""
    settings = {"backbone": config["backbone"], "eval_limit": config["eval_limit"], "max_length": config["max_length"]}
    if method in PROMPT_METHODS:
        settings["template"] = config["templates"][task]
        settings["demonstrations"] = config.get("demonstrations", 0)
    if method == "zero_shot":
        return {**settings, "calibrate": config["zero_shot_calibrate"]}
    settings |= {key: config[key] for key in ("steps", "batch_size", "eval_every")}
    settings["learning_rate"] = config[f"lr_{method}"]
    if method == "prompt_finetune":
        settings["freeze_embeddings"] = config.get("freeze_embeddings", False)
    if method == "lora":
        settings["lora_r"] = config["lora_r"]
    if method == "soft_prompt":
        settings["soft_tokens"] = config["soft_tokens"]
    if method == "prefix_tuning":
        settings["prefix_tokens"] = config.get("prefix_tokens", 16)
    return settings


def earlier_runs(paths: list[Path]) -> list[dict]:
    """The runs in earlier result files, each with the settings it ran under."""
    runs = []
    for path in paths:
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"--merge {path}: cannot read it as a few_shot results file ({err})") from None
        config = payload["config"]
        for run in payload["runs"]:
            runs.append({**run, "settings": run_settings(config, run["task"], run["method"])})
    return runs


def run_method(
    method: str, task: str, split: Split, backbones: Backbones, settings: Settings, seed: int, args
) -> Outcome:
    if method in PROMPT_METHODS:
        name = args.templates[task]
        template, verbalizer = load_template(name), load_verbalizer(paired_verbalizer(name))
        if args.demonstrations:
            template = with_demonstrations(template, verbalizer, split.train, per_class=args.demonstrations, seed=seed)
        return run_prompt_method(method, backbones, template, verbalizer, split, settings, seed)
    if method == "head_finetune":
        return run_head_finetune(backbones, get_task(task).labels, split, settings, seed)
    return run_setfit(get_task(task).labels, split, settings, seed)


class Runner:
    """Every (task, K, seed, method) run; collects the rows and the methods skipped with the reason."""

    def __init__(self, args: argparse.Namespace, settings: Settings, save: Callable[[], None]) -> None:
        self.args, self.settings, self.save = args, settings, save
        self.config = run_config(args)
        self.earlier = {self._key(run, run["settings"]): run for run in earlier_runs(args.merge)}
        self._backbones: Backbones | None = None
        self.rows: list[dict] = []
        self.skipped: dict[str, str] = {}
        self.zero_shot_done: dict[tuple, dict] = {}  # eval set -> result
        self.short_classes: set[str] = set()

    def run(self) -> None:
        for task in self.args.tasks:
            if task in FEWCLUE:
                fixed_eval = load_task(task, "test_public")
                random.Random(0).shuffle(fixed_eval)  # sorted by label: --eval-limit takes a fixed random N
                for seed in self.args.seeds:
                    split = fewclue_split(task, seed, fixed_eval, self.args.eval_limit)
                    for method in self.args.methods:
                        if method not in self.skipped:
                            self._run_one(method, task, FEWCLUE_K, seed, split)
                continue
            pool, fixed_eval = load_pool(task)
            for k in self.args.k:
                for seed in self.args.seeds:
                    split = draw(task, pool, fixed_eval, k, seed, self.args.eval_limit)
                    for note in short_classes(task, k, split):
                        logger.warning("seed %d: %s", seed, note)
                        self.short_classes.add(note)
                    for method in self.args.methods:
                        if method not in self.skipped:
                            self._run_one(method, task, k, seed, split)

    @property
    def backbones(self) -> Backbones:
        """Loaded on first use: a grid whose runs are all merged from earlier files loads nothing."""
        if self._backbones is None:
            self._backbones = Backbones(self.args.backbone)
        return self._backbones

    @staticmethod
    def _key(run: dict, settings: dict) -> tuple:
        return run["task"], run["k"], run["seed"], run["method"], json.dumps(settings, sort_keys=True)

    def _run_one(self, method: str, task: str, k: int | str, seed: int, split: Split) -> None:
        about = {"task": task, "k": k, "seed": seed, "method": method}
        settings = run_settings(self.config, task, method)
        sizes = {"n_train": len(split.train), "n_dev": len(split.dev), "n_eval": len(split.eval)}
        # Zero-shot uses no training data: score each evaluation set once, reuse it for every K and seed.
        # (Not with demonstrations: they come from the K-shot train set, so the prompt differs per K and seed.)
        demos = (k, seed) if self.args.demonstrations else None
        eval_key = (task, tuple(r.get("_pos", i) for i, r in enumerate(split.eval)), demos)
        earlier = self.earlier.get(self._key(about, settings))
        if earlier is not None:
            logger.info("%s K=%s seed=%d %s: reused from --merge", task, k, seed, method)
            self.rows.append(earlier)
            if method == "zero_shot":
                kept = ("accuracy", "macro_f1", "confusion_matrix", "seconds")
                self.zero_shot_done[eval_key] = {m: earlier[m] for m in kept if m in earlier}
            return
        if method == "zero_shot" and eval_key in self.zero_shot_done:
            self.rows.append({**about, **self.zero_shot_done[eval_key], **sizes, "reused": True, "settings": settings})
            return
        start = time.perf_counter()
        try:
            outcome = run_method(method, task, split, self.backbones, self.settings, seed, self.args)
        except MethodUnavailable as err:
            logger.warning("skipping %s: %s", method, err)
            self.skipped[method] = str(err)
            return
        result = {**scores(task, split.eval, outcome.predicted), "seconds": time.perf_counter() - start}
        if outcome.dev_scores:
            result["dev_scores"] = outcome.dev_scores
        if method == "zero_shot":
            self.zero_shot_done[eval_key] = result
        self.rows.append({**about, **result, **sizes, "reused": False, "settings": settings})
        logger.info("%s K=%s seed=%d %s: %s", task, k, seed, method, result)
        self.save()
        gc.collect()  # the run's model copy


def notes_for(args: argparse.Namespace, runner: Runner) -> list[str]:
    """What a reader of the table must know about this run."""
    notes = [f"{args.backbone}; {args.steps} steps of batch {args.batch_size}; seeds {args.seeds}."]
    if args.eval_every:
        every = args.eval_every
        notes.append(f"a dev set of K per class, drawn disjoint from train (LM-BFF), picks the best checkpoint "
                     f"among evaluations every {every} steps and at the end; SetFit has no dev selection.")  # fmt: skip
    else:
        notes.append("no dev-set selection: every method is evaluated at its last step.")
    if not args.demonstrations:
        notes.append("zero_shot trains nothing: it is scored once per evaluation set and repeated across K and seeds.")
    else:
        notes.append(f"prompt methods put {args.demonstrations} in-context demonstration(s) per class, drawn from "
                     "the K-shot train set with the run's seed, before every prompt (--demonstrations).")  # fmt: skip
    if "ag_news" in args.tasks:
        notes.append(AG_NEWS_NOTE)
    if any(task in FEWCLUE for task in args.tasks):
        notes.append(FEWCLUE_NOTE)
    if args.eval_limit:
        notes.append(f"evaluation capped at the first {args.eval_limit} examples (--eval-limit; FewCLUE's "
                     "test_public, sorted by label, is shuffled with seed 0 first).")  # fmt: skip
    notes += sorted(runner.short_classes)
    return notes + [f"skipped {method}: {reason}" for method, reason in runner.skipped.items()]


def plot_title(config: dict) -> str:
    """The plot's title: tasks, backbone, budget and demonstrations."""
    title = f"few-shot {', '.join(config['tasks'])}, {config['backbone']}, {config['steps']} steps"
    demos = config.get("demonstrations", 0)
    return title + (f"\nwith {demos} in-context demonstration(s) per class" if demos else "")


def replot(path: Path) -> Path | None:
    """Redraw the PNG of an earlier result file (``<name>.json`` -> ``<name>.png``) from its runs."""
    try:
        payload = json.loads(Path(path).read_text())
        config, runs, aggregates = payload["config"], payload["runs"], payload["aggregates"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise SystemExit(f"--replot {path}: cannot read it as a few_shot results file ({err!r})") from None
    methods = [m for m in config["methods"] if any(a["method"] == m for a in aggregates)]
    return plot(aggregates, config["tasks"], methods, Path(path).with_suffix(".png"), plot_title(config), runs)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.replot:
        plots = [str(replot(path)) for path in args.replot]
        print("\n".join(f"wrote {path}" for path in plots))
        return {"plots": plots}
    rates = {m: getattr(args, f"lr_{m}") for m in LEARNING_RATES}
    settings = Settings(args.steps, args.batch_size, args.eval_every, args.max_length, rates,
                        lora_r=args.lora_r, soft_tokens=args.soft_tokens, prefix_tokens=args.prefix_tokens,
                        zero_shot_calibrate=args.zero_shot_calibrate,
                        freeze_embeddings=args.freeze_embeddings)  # fmt: skip
    name = f"few_shot_{Path(args.backbone).name}"
    out = args.out or RESULTS

    def save() -> dict:
        methods = [m for m in args.methods if m not in runner.skipped]
        aggregates = aggregate(runner.rows)
        notes = notes_for(args, runner)
        payload = {"config": runner.config, "environment": environment(), "notes": notes, "skipped": runner.skipped,
                   "std": "sample standard deviation over seeds (ddof=1)",
                   "labels": {task: list(get_task(task).labels) for task in args.tasks},
                   "confusion_matrix": "per run: rows are true labels, columns predicted, both in labels[task] order",
                   "runs": runner.rows, "aggregates": aggregates}  # fmt: skip
        # Columns: the K's only where a task draws K-shot sets, "FewCLUE sets" only where one uses FewCLUE's.
        kshot, fewclue = any(t not in FEWCLUE for t in args.tasks), any(t in FEWCLUE for t in args.tasks)
        ks = [*(args.k if kshot else []), *([FEWCLUE_K] if fewclue else [])]
        table = markdown(aggregates, args.tasks, methods, ks, notes)
        write_results(name, payload, table, out)
        plot(aggregates, args.tasks, methods, out / f"{name}.png", plot_title(runner.config), runner.rows)
        return {**payload, "table": table}

    runner = Runner(args, settings, save)
    runner.run()
    payload = save()
    print(f"\n{payload.pop('table')}\n\nwrote {out / name}.json")
    return payload


if __name__ == "__main__":
    main()
