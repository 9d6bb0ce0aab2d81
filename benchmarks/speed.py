"""PromptModel throughput against a plain transformers loop over the same token batches.

Both sides see identical ``input_ids``/``attention_mask`` batches (taken from
PromptModel's own encoder) and both apply the LM head only at the scored position, so
the ratio measures promptkit's overhead: rendering, tokenization, gathering and label
combination. Runs alternate (baseline, promptkit, baseline, ...) in one process and the
best time of each side is compared. Peak RSS is read from the OS after the runs.

    python benchmarks/speed.py                    # SST-2 dev, default backbone
    python benchmarks/speed.py --limit 256 --repeats 3

Writes JSON, a markdown table and a PNG of examples per second (the best run of each side as
a bar, every run as a dot); ``--replot`` redraws the PNG from an earlier JSON alone.

    python benchmarks/speed.py --replot benchmarks/results/speed_smollm2-135m.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, write_results  # noqa: E402
from _plots import bars, pyplot, save  # noqa: E402

from promptkit import PromptModel, load_task  # noqa: E402
from promptkit.backbones import DEFAULT_BACKBONE  # noqa: E402
from promptkit.catalog import load_template, load_verbalizer, paired_verbalizer  # noqa: E402


def plain_loop(backbone, batches, word_ids: torch.Tensor) -> torch.Tensor:
    """Hand-written transformers inference: body, last real position, LM head, log-softmax."""
    out = []
    with torch.inference_mode():
        for batch in batches:
            hidden = backbone.base_model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            )[0]
            last = batch.attention_mask.sum(-1) - 1  # [B]
            picked = hidden[torch.arange(hidden.size(0)), last]  # [B, H]
            logits = backbone.get_output_embeddings()(picked)  # [B, V]
            out.append(logits.log_softmax(-1)[:, word_ids])
    return torch.cat(out)


SIDES = {"plain": "plain transformers loop", "promptkit": "PromptModel.predict_proba"}


def plot(payload: dict, path: Path) -> Path | None:
    """Examples per second of both sides: the best run as a bar, every run as a dot; None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    n = payload["n_examples"]
    rates = {side: [n / seconds for seconds in payload["times_s"][side]] for side in SIDES}
    best = [max(rates[side]) for side in SIDES]
    fig, ax = plt.subplots(figsize=(7, 2.6))
    bars(ax, list(SIDES.values()), best, points=list(rates.values()), text=[f"{rate:.1f} ex/s" for rate in best])
    ax.set_xlabel(f"examples per second ({n} SST-2 dev examples, batch {payload['batch_size']}; dots: runs)")
    ax.set_title(f"{payload['backbone']}: promptkit / plain = {payload['throughput_ratio']:.2f}x (best runs)")
    return save(fig, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--template", default="sst2/review_sentiment", help="a template with the mask at the end")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--replot", type=Path, default=None, metavar="JSON",
                        help="only redraw the PNG next to this earlier result file, then exit")  # fmt: skip
    args = parser.parse_args(argv)
    if args.replot is not None:
        try:
            earlier = json.loads(args.replot.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"--replot {args.replot}: cannot read it as a speed results file ({err})") from None
        drawn = plot(earlier, args.replot.with_suffix(".png"))
        print(f"wrote {drawn}")
        return {**earlier, "plot": str(drawn)}
    torch.manual_seed(args.seed)

    examples = load_task("sst2", "dev", limit=args.limit)
    model = PromptModel.from_pretrained(
        args.backbone,
        template=load_template(args.template),
        verbalizer=load_verbalizer(paired_verbalizer(args.template)),
        batch_size=args.batch_size,
    )
    if model.head != "causal":
        raise SystemExit("speed.py compares against a causal-LM loop; pass a causal backbone")
    batches = [batch for _, batch in model.batches(examples)]
    if any(b.input_ids.shape[0] != b.n_examples for b in batches):
        raise SystemExit("speed.py needs single-token label words and a template with the mask at the end")
    word_ids = torch.tensor([ids[0] for ids in model.table.ids(True)])

    times = {"plain": [], "promptkit": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        plain_loop(model.backbone, batches, word_ids)
        times["plain"].append(time.perf_counter() - start)
        start = time.perf_counter()
        model.predict_proba(examples, progress=False)
        times["promptkit"].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    rows = [
        {"method": method, "seconds": best[side], "examples_per_s": len(examples) / best[side]}
        for side, method in SIDES.items()
    ]
    ratio = best["plain"] / best["promptkit"]
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = markdown_table(rows, ["method", "seconds", "examples_per_s"])
    table += f"\n\nthroughput ratio promptkit / plain = {ratio:.3f} (target >= 0.95); peak RSS {peak_rss_mib:.0f} MiB"
    payload = {
        "backbone": args.backbone,
        "template": args.template,
        "n_examples": len(examples),
        "batch_size": args.batch_size,
        "times_s": times,
        "best_s": best,
        "throughput_ratio": ratio,
        "peak_rss_mib": peak_rss_mib,
        "environment": environment(),
    }
    path = write_results(f"speed_{args.backbone}", payload, table, args.out)
    plot(payload, path.with_suffix(".png"))
    print(f"\n{table}\n\nwrote {path} and {path.with_suffix('.png').name}")
    return payload


if __name__ == "__main__":
    main()
