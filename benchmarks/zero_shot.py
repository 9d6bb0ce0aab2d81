"""Zero-shot accuracy of every catalog template of a task, raw and calibrated.

Each template is scored once; the three calibrations (none, content-free, batch) are
applied to the same label log-probabilities, so they differ only in the prior.

    python benchmarks/zero_shot.py --task sst2            # every sst2 template
    python benchmarks/zero_shot.py --task sst2 --best     # the recommended one only
    python benchmarks/zero_shot.py --task rte --limit 100 --backbone splade-tiny
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, write_results  # noqa: E402

from promptkit import PromptModel, load_task  # noqa: E402
from promptkit.backbones import DEFAULT_BACKBONE, load_backbone  # noqa: E402
from promptkit.catalog import list_templates, load_template, load_verbalizer, paired_verbalizer  # noqa: E402
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
        rows.append(
            {
                "calibration": name,
                "accuracy": float(accuracy_score(targets, predicted)),
                "macro_f1": float(f1_score(targets, predicted, average="macro")),
                "examples_per_s": len(examples) / seconds,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--split", default=None, help="default: the task's evaluation split")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--templates", nargs="*", help="catalog names; default: all of the task")
    parser.add_argument("--best", action="store_true", help="only the task's recommended template")
    parser.add_argument("--limit", type=int, default=None, help="first N evaluation examples")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)

    split = args.split or get_task(args.task).default_eval_split
    examples = load_task(args.task, split, limit=args.limit)
    names = [BEST[args.task]] if args.best else (args.templates or list_templates(args.task))
    backbone, tokenizer, head = load_backbone(args.backbone)
    rows = []
    for name in names:
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
        "backbone": args.backbone,
        "seed": args.seed,
        "environment": environment(),
        "results": rows,
    }
    suffix = "_best" if args.best else ""
    path = write_results(f"zero_shot_{args.task}_{args.backbone}{suffix}", payload, table, args.out)
    print(f"\n{args.task} ({split}, {len(examples)} examples, {args.backbone})\n\n{table}\n\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
