"""Inference speed (issue 16): one script, four sections, one JSON + markdown table + PNG.

- ``plain``: PromptModel.predict_proba against a plain transformers loop over the same prompts,
  batched in input order (unsorted) and over promptkit's own length-sorted, token-budget
  batches (sorted). Both apply the LM head only at the scored position.
- ``demos``: SST-2 dev with one demonstration per class before every prompt: shared-prefix
  key/value reuse on against off, with the predictions compared.
- ``precision``: float32 / bfloat16 / int8 (int8 weights, :mod:`promptkit.precision`) / int8_512
  (int8 with ``max_batch_tokens=512``: the smallest-memory mode) on SST-2 dev: accuracy,
  examples/s and peak RSS, each mode in a fresh process.
- ``scaling``: examples/s and peak RSS against the number of examples (SST-2 train sentences,
  each N in a fresh process) and against prompt length (the review said k times).

In-process sections alternate their sides and keep each side's best run (ratios from one
process on a noisy machine). Results are rewritten after every section; ``--merge`` keeps the
sections of an earlier file that this run does not redo.

    python benchmarks/speed.py                                   # every section, CPU-sized defaults
    python benchmarks/speed.py --sections demos --limit 200
    python benchmarks/speed.py --sections scaling --sizes 1000 10000 67349 --merge
    python benchmarks/speed.py --replot benchmarks/results/speed_smollm2-135m.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, markdown_table, write_results  # noqa: E402
from _plots import bars, pyplot, save  # noqa: E402
from _speed_sections import MODES, SECTIONS, measure  # noqa: E402

from promptkit.backbones import DEFAULT_BACKBONE  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    p.add_argument("--backbone", default=DEFAULT_BACKBONE)
    p.add_argument("--template", default="sst2/review_sentiment", help="a template with the mask at the end")
    p.add_argument("--limit", type=int, default=872, help="SST-2 dev examples for plain, demos and precision")
    p.add_argument("--batch-size", type=int, default=32, help="the plain loop's batch size (input order)")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs per side (in-process sections)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="precision: modes to compare")
    p.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000], help="scaling: SST-2 train examples")
    p.add_argument("--repeats-text", nargs="+", type=int, default=[1, 4, 16], help="scaling: review said k times")
    p.add_argument("--length-n", type=int, default=256, help="scaling: examples per prompt length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--merge", action="store_true", help="keep the earlier file's sections this run does not redo")
    p.add_argument("--replot", type=Path, default=None, metavar="JSON", help="only redraw the PNG of this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one measurement, JSON in and out
    return p.parse_args(argv)


def table(payload: dict[str, Any]) -> str:
    """The markdown report: one table per section present."""
    s, parts = payload["sections"], [f"backbone {payload['backbone']}, template {payload['template']}, "
                                     f"{payload['environment']['threads']} torch threads"]  # fmt: skip
    if "plain" in s:
        a = s["plain"]
        rows = [{"method": k, "best_s": a["best_s"][k], "examples_per_s": a["examples_per_s"][k]} for k in a["best_s"]]
        parts.append(f"### (a) against a plain loop ({a['n_examples']} SST-2 dev)\n\n"
                     + markdown_table(rows, ["method", "best_s", "examples_per_s"])
                     + f"\n\npromptkit / plain unsorted = {a['ratio_vs_unsorted']:.2f}x; "
                     f"promptkit / plain sorted = {a['ratio_vs_sorted']:.2f}x")  # fmt: skip
    if "demos" in s:
        b = s["demos"]
        rows = [{"prefix reuse": k, "best_s": b["best_s"][k], "examples_per_s": b["examples_per_s"][k]}
                for k in b["best_s"]]  # fmt: skip
        parts.append(f"### (b) one demonstration per class ({b['n_examples']} SST-2 dev)\n\n"
                     + markdown_table(rows, ["prefix reuse", "best_s", "examples_per_s"])
                     + f"\n\nspeed-up {b['speedup']:.2f}x; identical predictions: {b['identical_predictions']} "
                     f"(largest probability difference {b['max_abs_probability_difference']:.1e}); "
                     f"accuracy {100 * b['accuracy']:.1f}%")  # fmt: skip
    if "precision" in s:
        runs = list(s["precision"]["runs"].values())
        cols = ["mode", "accuracy", "accuracy_change_points", "agreement_with_float32", "examples_per_s",
                "speedup_vs_float32", "peak_rss_mib", "load_s"]  # fmt: skip
        parts.append(f"### (d) precision ({runs[0]['n']} SST-2 dev; CPU: {' '.join(s['precision']['cpu_flags'])})\n\n"
                     + markdown_table(runs, cols))  # fmt: skip
    if "scaling" in s:
        c = s["scaling"]
        cols = ["n", "mean_prompt_tokens", "examples_per_s", "peak_rss_mib", "load_s"]
        parts.append("### (c) scaling with the number of examples (SST-2 train, float32)\n\n"
                     + markdown_table(list(c["by_n"].values()), cols)
                     + "\n\n### (c) scaling with prompt length (SST-2 dev, review said k times)\n\n"
                     + markdown_table(list(c["by_length"].values()), ["repeat", *cols]))  # fmt: skip
    return "\n\n".join(parts)


def plot(payload: dict[str, Any], path: Path) -> Path | None:
    """One panel of examples/s per section present; None without matplotlib."""
    plt = pyplot()
    s = payload["sections"]
    panels = [(name, s[name]) for name in ("plain", "demos", "precision", "scaling") if name in s]
    if plt is None or not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.2 * len(panels)), squeeze=False)
    for ax, (name, data) in zip(axes[:, 0], panels):
        if name == "precision":
            rates = {k: v["examples_per_s"] for k, v in data["runs"].items()}
        elif name == "scaling":
            rates = {f"N={v['n']}": v["examples_per_s"] for v in data["by_n"].values()}
            rates |= {f"{v['mean_prompt_tokens']:.0f} tokens": v["examples_per_s"] for v in data["by_length"].values()}
        else:
            rates = data["examples_per_s"]
        bars(ax, list(rates), list(rates.values()), text=[f"{r:.1f} ex/s" for r in rates.values()])
        ax.set_title(f"({'abdc'[['plain', 'demos', 'precision', 'scaling'].index(name)]}) {name}", fontsize="small")
    axes[-1, 0].set_xlabel(f"examples per second, {payload['backbone']}")
    return save(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(measure(json.loads(args.worker))))
        return {}
    if args.replot is not None:
        try:
            earlier = json.loads(args.replot.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"--replot {args.replot}: cannot read it as a speed results file ({err})") from None
        drawn = plot(earlier, args.replot.with_suffix(".png"))
        print(f"wrote {drawn}")
        return {**earlier, "plot": str(drawn)}
    torch.manual_seed(args.seed)
    name = f"speed_{Path(args.backbone).name}"
    path = (args.out or RESULTS) / f"{name}.json"
    sections = json.loads(path.read_text())["sections"] if args.merge and path.exists() else {}
    payload: dict[str, Any] = {}

    def save(section: str, result: dict[str, Any]) -> None:
        nonlocal payload
        sections[section] = {**result, "settings": vars(args) | {"out": str(args.out)}}
        payload = {"backbone": args.backbone, "template": args.template, "sections": sections,
                   "environment": environment()}  # fmt: skip
        written = write_results(name, payload, table(payload), args.out)
        plot(payload, written.with_suffix(".png"))

    for section in args.sections:
        print(f"--- {section}", flush=True)
        save(section, SECTIONS[section](args, lambda partial, section=section: save(section, partial)))
    print(f"\n{table(payload)}\n\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
