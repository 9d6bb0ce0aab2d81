"""Zero-shot SST-2 dev accuracy of every promptsource glue/sst2 template that converts,
next to the catalog's best template, on the same backbone and rows.

Each template is scored once; the three calibrations (none, content-free, batch) are
applied to the same label log-probabilities (as in zero_shot.py). Results are rewritten
after every template, so a killed run keeps what finished ("complete": false).

    python benchmarks/promptsource_sst2.py                 # full dev set (872 rows per template)
    python benchmarks/promptsource_sst2.py --limit 100     # a quick look (file name gets _limit100)
    python benchmarks/promptsource_sst2.py --chat          # as chat templates (file name gets _chat)
    python benchmarks/promptsource_sst2.py --replot benchmarks/results/promptsource_sst2_smollm2-135m.json
    OMP_NUM_THREADS=1 nohup python benchmarks/promptsource_sst2.py > /tmp/ps_sst2.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, write_results  # noqa: E402
from _plots import score_bars  # noqa: E402
from zero_shot import BEST, evaluate  # noqa: E402

from promptkit import PromptModel, load_task  # noqa: E402
from promptkit import promptsource as ps  # noqa: E402
from promptkit.backbones import DEFAULT_BACKBONE, load_backbone  # noqa: E402
from promptkit.catalog import load_template, load_verbalizer, paired_verbalizer  # noqa: E402

CHAT = "sst2/chat_sentiment"
COLUMNS = ["template", "source", "label_words", "calibration", "accuracy", "macro_f1", "examples_per_s"]


def prompts(names: list[str] | None, chat: bool = False) -> list[tuple[str, str, Any, Any]]:
    """(name, source, template, verbalizer): the catalog's best SST-2 template (and with
    ``chat`` its chat template), then every converted promptsource glue/sst2 template (or only
    ``names`` of them), as chat templates with ``chat``."""
    best = BEST["sst2"]
    out = [(best, "catalog (best)", load_template(best), load_verbalizer(paired_verbalizer(best)))]
    if chat:
        out.append((CHAT, "catalog (chat)", load_template(CHAT), load_verbalizer(paired_verbalizer(CHAT))))
    collection = ps.load("glue/sst2", chat=chat)
    for converted in collection:
        if names is None or converted.name in names:
            out.append((f"glue/sst2/{converted.name}", "promptsource", converted.template, converted.verbalizer))
    for skipped in collection.skipped:
        logging.info("promptsource glue/sst2/%s not converted: %s (%s)", skipped.name, skipped.reason, skipped.detail)
    return out


def plot(payload: dict[str, Any], json_path: Path) -> Path | None:
    """One bar per template and calibration, saved as a PNG next to the results JSON."""
    rows = payload["results"]
    kind = ", chat templates" if payload.get("chat") else ""
    title = f"SST-2 {payload['split']} ({payload['n_examples']}), zero-shot, {payload['backbone']}{kind}"
    names = [f"{r['template']} [{r['source']}] · {r['calibration']}" for r in rows]
    return score_bars(json_path.with_suffix(".png"), title, names, [r["accuracy"] for r in rows], reference=0.5)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--limit", type=int, default=None, help="first N dev rows (default: all 872)")
    parser.add_argument("--templates", nargs="*", help="promptsource template names (default: all converted)")
    parser.add_argument("--chat", action="store_true", help="convert the promptsource templates as chat templates")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--replot", type=Path, default=None, help="only redraw the PNG of this results JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.replot is not None:
        payload = json.loads(args.replot.read_text())
        print(f"wrote {plot(payload, args.replot)}")
        return payload
    torch.manual_seed(args.seed)

    examples = load_task("sst2", "dev", limit=args.limit)
    backbone, tokenizer, head = load_backbone(args.backbone)
    todo = prompts(args.templates, args.chat)
    name = f"promptsource_sst2_{Path(args.backbone).name}" + ("_chat" if args.chat else "")
    name += f"_limit{args.limit}" if args.limit is not None else ""
    payload: dict[str, Any] = {
        "task": "sst2",
        "split": "dev",
        "n_examples": len(examples),
        "backbone": args.backbone,
        "seed": args.seed,
        "chat": args.chat,
        "environment": environment(),
        "complete": False,
        "results": [],
    }
    start = time.perf_counter()
    for template_name, source, template, verbalizer in todo:
        model = PromptModel(backbone, tokenizer, template, verbalizer, head=head, batch_size=args.batch_size)
        words = " / ".join(w for label in verbalizer.labels for w in verbalizer.words[verbalizer.index(label)])
        for row in evaluate(model, examples):
            payload["results"].append({"template": template_name, "source": source, "label_words": words, **row})
            logging.info("%s %s", template_name, row)
        payload["seconds"] = time.perf_counter() - start
        write_results(name, payload, markdown_table(payload["results"], COLUMNS), args.out)
    payload["complete"] = True
    table = markdown_table(payload["results"], COLUMNS)
    path = write_results(name, payload, table, args.out)
    plot(payload, path)
    print(f"\nsst2 (dev, {len(examples)} examples, {args.backbone})\n\n{table}\n\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
