"""Zero-shot accuracy of every catalog template of a task, raw and calibrated.

Each template is scored once; the three calibrations (none, content-free, batch) are
applied to the same label log-probabilities, so they differ only in the prior. Chat
templates are skipped, and listed under ``skipped``, for a backbone whose tokenizer has no
chat template.

    python benchmarks/zero_shot.py --task sst2            # every sst2 template
    python benchmarks/zero_shot.py --task sst2 --best     # the recommended one only
    python benchmarks/zero_shot.py --task rte --limit 100 --backbone splade-tiny
    python benchmarks/zero_shot.py --task tnews --backbone gemma3-270m   # FewCLUE, scored on test_public

Data comes from wherever ``load_task`` finds it (``$PROMPTKIT_DATA``, ``shared/data``, the
cache, the Hugging Face hub; see ``promptkit.data``). Where no source has it, the script
prints how to get it and exits with status 1, except ``--task sst2 --best`` (``make demo``):
that scores a few dozen built-in DEMO sentences (``promptkit.data_demo``, not a benchmark),
prints their predictions and how to get SST-2, and writes no result files.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, write_results  # noqa: E402
from _metrics import classification_scores  # noqa: E402
from _plots import score_bars  # noqa: E402

from promptkit import PromptModel, load_task  # noqa: E402
from promptkit.backbones import DEFAULT_BACKBONE, load_backbone  # noqa: E402
from promptkit.catalog import list_templates, load_template, load_verbalizer, paired_verbalizer  # noqa: E402
from promptkit.data import DataUnavailableError  # noqa: E402
from promptkit.data_demo import DEMO_NOTE, demo_rows  # noqa: E402
from promptkit.scoring import calibrated, mean_prior  # noqa: E402
from promptkit.tasks import get_task  # noqa: E402

# The template each task's `--best` runs (chosen from this script's full runs; see README).
BEST = {"sst2": "sst2/review_sentiment"}
CALIBRATIONS = ("none", "content_free", "batch")


def evaluate(model: PromptModel, examples: list[dict]) -> list[dict]:
    """Accuracy, macro-F1 and throughput of one template under each calibration."""
    targets = np.array([model.verbalizer.index(e["label"]) for e in examples])
    start = time.perf_counter()
    raw = model.label_log_probs(examples)
    seconds = time.perf_counter() - start
    priors = {
        "none": None,
        "content_free": model.content_free_prior(),
        "batch": mean_prior(raw),
    }
    rows = []
    for name in CALIBRATIONS:
        predicted = calibrated(raw, priors[name]).argmax(-1).numpy()
        scores = classification_scores(targets, predicted, range(len(model.verbalizer.labels)))
        rows.append({"calibration": name, **scores, "examples_per_s": len(examples) / seconds})
    return rows


def run_demo(args: argparse.Namespace, missing: DataUnavailableError) -> dict:
    """Score the built-in DEMO sentences with the best SST-2 template; print predictions and how to get SST-2."""
    rows = demo_rows(args.limit)
    name = BEST["sst2"]
    backbone, tokenizer, head = load_backbone(args.backbone)
    verbalizer = load_verbalizer(paired_verbalizer(name))
    model = PromptModel(backbone, tokenizer, load_template(name), verbalizer, head=head, batch_size=args.batch_size)
    start = time.perf_counter()
    proba = calibrated(model.label_log_probs(rows), model.content_free_prior()).exp()
    seconds = time.perf_counter() - start
    positive = list(verbalizer.labels).index(1)
    predicted = [verbalizer.labels[i] for i in proba.argmax(-1).tolist()]
    words = {0: "negative", 1: "positive"}
    lines = [f"{'label':<9} {'predicted':<9} {'p(pos)':>6}  sentence"]
    for row, label, p in zip(rows, predicted, proba[:, positive].tolist()):
        mark = "" if label == row["label"] else "  <- wrong"
        lines.append(f"{words[row['label']]:<9} {words[label]:<9} {p:>6.2f}  {row['text']}{mark}")
    right = sum(label == row["label"] for row, label in zip(rows, predicted))
    print(
        f"\nNo SST-2 data on this machine, so this is the DEMO: {len(rows)} built-in sentences.\n{DEMO_NOTE}\n"
        f"Template {name}, backbone {args.backbone}, content-free calibration, {seconds:.1f} s.\n\n"
        + "\n".join(lines)
        + f"\n\nDEMO: {right} of {len(rows)} predicted as labelled. No result files written.\n"
        f"\nFor the real figure (SST-2 dev, 872 sentences), get the data and run this again:\n{missing}"
    )
    return {"demo": True, "template": name, "backbone": args.backbone, "n_examples": len(rows), "correct": right}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--split", default=None, help="default: the task's evaluation split (FewCLUE: test_public)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--templates", nargs="*", help="catalog names; default: all of the task")
    parser.add_argument("--best", action="store_true", help="only the task's recommended template")
    parser.add_argument("--limit", type=int, default=None, help="first N evaluation examples")
    parser.add_argument("--sample", type=int, default=None,
                        help="N evaluation examples drawn at random with --seed (FewCLUE's test_public is sorted by "
                        "label, so its first N are one class)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument(
        "--no-demo", action="store_true", help="with --task sst2 --best and no data: fail instead of the demo sentences"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)

    split = args.split or get_task(args.task).default_eval_split
    try:
        examples = load_task(args.task, split, limit=args.limit)
        if args.sample is not None and args.sample < len(examples):
            examples = [examples[i] for i in sorted(random.Random(args.seed).sample(range(len(examples)), args.sample))]
    except DataUnavailableError as missing:
        if args.task == "sst2" and args.best and not args.no_demo:
            return run_demo(args, missing)
        raise SystemExit(f"\n{missing}") from None
    names = [BEST[args.task]] if args.best else (args.templates or list_templates(args.task))
    backbone, tokenizer, head = load_backbone(args.backbone)
    rows, skipped = [], {}
    for name in names:
        if load_template(name).chat and not getattr(tokenizer, "chat_template", None):
            skipped[name] = f"{args.backbone}'s tokenizer has no chat template"
            logging.warning("skipping %s: %s", name, skipped[name])
            continue
        verbalizer = paired_verbalizer(name)
        model = PromptModel(
            backbone, tokenizer, load_template(name), load_verbalizer(verbalizer), head=head, batch_size=args.batch_size
        )
        for row in evaluate(model, examples):
            rows.append({"template": name, "verbalizer": verbalizer, **row})
            logging.info("%s %s", name, row)
    columns = ["template", "verbalizer", "calibration", "accuracy", "macro_f1", "examples_per_s"]
    table = markdown_table(rows, columns)
    payload = {
        "task": args.task,
        "split": split,
        "n_examples": len(examples),
        "sample": args.sample,
        "backbone": args.backbone,
        "seed": args.seed,
        "environment": environment(),
        "results": rows,
        "skipped": skipped,
    }
    suffix = "_best" if args.best else ""
    path = write_results(f"zero_shot_{args.task}_{Path(args.backbone).name}{suffix}", payload, table, args.out)
    score_bars(path.with_suffix(".png"), f"{args.task} {split} ({len(examples)}), zero-shot, {args.backbone}",
               [f"{r['template']} · {r['calibration']}" for r in rows], [r["accuracy"] for r in rows],
               reference=1 / len(get_task(args.task).labels))  # fmt: skip
    notes = "".join(f"\nskipped {name}: {reason}" for name, reason in skipped.items())
    print(f"\n{args.task} ({split}, {len(examples)} examples, {args.backbone})\n\n{table}\n{notes}\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
