"""AutoPrompt on SST-2 with a frozen backbone: searched triggers (and label words) against hand-written prompts.

Four prompts are scored on SST-2 dev, raw and content-free calibrated, with the backbone's
weights untouched:

1. ``base``: the trigger template with its trigger slots removed;
2. ``best_manual``: the best hand-written shipped template (``sst2/review_sentiment``);
3. ``triggers``: the trigger template with the searched triggers written in as text;
4. ``triggers+words``: the same, with label words searched on the training sample.

The search trains on a seeded sample of SST-2 train and selects triggers on a disjoint dev
sample; the dev set the figures come from is never seen by the search. Flags shrink the
search for a 2-core CPU; the output states them.

    python benchmarks/autoprompt.py                                  # CPU-sized defaults
    python benchmarks/autoprompt.py --iterations 100 --candidates 20 --train-size 256
    python benchmarks/autoprompt.py --lm-pool 200       # candidates among the LM's own top-200 tokens
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, write_results  # noqa: E402
from _plots import score_bars  # noqa: E402
from zero_shot import evaluate  # noqa: E402

from promptkit import PromptModel, Template, get_strategy, load_task  # noqa: E402
from promptkit.backbones import DEFAULT_BACKBONE, load_backbone  # noqa: E402
from promptkit.catalog import load_template, load_verbalizer  # noqa: E402

TRIGGER_TEMPLATE = "{{ text }} {{ trigger(%d) }} {{ mask }}"
BEST_MANUAL = "sst2/review_sentiment"
VERBALIZER = "sst2/positive_negative"


def samples(seed: int, train_size: int, select_size: int) -> tuple[list[dict], list[dict]]:
    """Disjoint seeded samples of SST-2 train: one to search on, one to select triggers on."""
    pool = load_task("sst2", "train")
    picked = random.Random(seed).sample(range(len(pool)), train_size + select_size)
    return [pool[i] for i in picked[:train_size]], [pool[i] for i in picked[train_size:]]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--triggers", type=int, default=4, help="trigger tokens in the template")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--candidates", type=int, default=10, help="top-k candidates per iteration")
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dev-every", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=128, help="SST-2 train rows the search uses")
    parser.add_argument("--select-size", type=int, default=64, help="SST-2 train rows that select triggers")
    parser.add_argument("--label-words", type=int, default=1, help="searched label words per label")
    parser.add_argument("--lm-pool", type=int, default=None, help="candidates only among the LM's top-N tokens")
    parser.add_argument("--eval-limit", type=int, default=None, help="first N SST-2 dev rows (default: all 872)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)

    backbone, tokenizer, head = load_backbone(args.backbone)
    backbone.requires_grad_(False)
    verbalizer = load_verbalizer(VERBALIZER)
    train, select = samples(args.seed, args.train_size, args.select_size)
    dev = load_task("sst2", "dev", limit=args.eval_limit)

    slotted = Template(TRIGGER_TEMPLATE % args.triggers, name="sst2/autoprompt")
    model = PromptModel(backbone, tokenizer, slotted, verbalizer, head=head)
    strategy = get_strategy(
        "autoprompt", n_candidates=args.candidates, iterations=args.iterations, accumulation=args.accumulation,
        batch_size=args.batch_size, dev_every=args.dev_every, seed=args.seed, label_words_k=args.label_words,
        lm_pool=args.lm_pool,
    )  # fmt: skip
    start = time.perf_counter()
    strategy.fit(model, train, dev=select)
    search_s = time.perf_counter() - start
    start = time.perf_counter()
    searched_words = strategy.search_label_words(model, train, k=args.label_words)
    words_s = time.perf_counter() - start
    scored = sum(h["n_scored"] for h in strategy.history_)  # the current trigger and every candidate, per iteration

    prompts = {
        "base": (Template("{{ text }} {{ mask }}", name="sst2/no_triggers"), verbalizer),
        "best_manual": (load_template(BEST_MANUAL), verbalizer),
        "triggers": (strategy.template_, verbalizer),
        "triggers+words": (strategy.template_, searched_words),
    }
    rows = []
    for name, (template, words) in prompts.items():
        scorer = PromptModel(backbone, tokenizer, template, words, head=head)
        for row in evaluate(scorer, dev):
            if row["calibration"] != "batch":
                rows.append({"prompt": name, "template": template.text, **row})
                logging.info("%s %s", name, row)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    table = markdown_table(rows, ["prompt", "template", "calibration", "accuracy", "macro_f1"])
    table += (
        f"\n\nSST-2 dev ({len(dev)} examples), frozen {args.backbone}. Search: {search_s:.0f} s, "
        f"{scored / search_s:.1f} candidates scored per second ({args.batch_size} rows each); label-word search "
        f"{words_s:.0f} s. "
        f"Searched label words: {dict(zip(verbalizer.labels, searched_words.words))}. Settings: {settings}"
    )
    payload = {
        "backbone": args.backbone,
        "settings": settings,
        "n_dev": len(dev),
        "search_seconds": search_s,
        "label_word_search_seconds": words_s,
        "candidates_per_second": scored / search_s,
        "triggers": strategy.template_.text,
        "label_words": {str(k): list(v) for k, v in zip(verbalizer.labels, searched_words.words)},
        "history": strategy.history_,
        "environment": environment(),
        "results": rows,
    }
    path = write_results(f"autoprompt_sst2_{Path(args.backbone).name}", payload, table, args.out)
    score_bars(
        path.with_suffix(".png"),
        f"SST-2 dev ({len(dev)}), frozen {args.backbone}: AutoPrompt",
        [f"{r['prompt']} · {r['calibration']}" for r in rows],
        [r["accuracy"] for r in rows],
        reference=0.5,
    )
    print(f"\n{table}\n\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
