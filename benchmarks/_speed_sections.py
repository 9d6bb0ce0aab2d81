"""The measurements of ``benchmarks/speed.py``, one function per section.

In-process sections alternate their sides (A, B, A, B, ...) and keep each side's best run,
so a noisy machine slows both alike. Sections that report peak memory run every setting in
a fresh process (:func:`measure`, called through ``speed.py --worker``): a process's peak
resident set size (``ru_maxrss``) only grows, so it must hold one setting alone.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptkit import PromptModel, load_task
from promptkit.catalog import load_template, load_verbalizer, paired_verbalizer
from promptkit.demonstrations import with_demonstrations

SCRIPT = Path(__file__).resolve().parent / "speed.py"


MODES: dict[str, dict[str, Any]] = {  # precision modes: from_pretrained options
    "float32": {},
    "bfloat16": {"dtype": "bfloat16"},
    "int8": {"quantize": "int8"},
    "int8_512": {"quantize": "int8", "max_batch_tokens": 512},  # the smallest-memory mode: small batches too
}


def load_model(backbone: str, template: str, mode: str = "float32", **options: Any) -> PromptModel:
    """A PromptModel on ``template`` and its paired verbalizer, in ``mode`` (a key of :data:`MODES`)."""
    return PromptModel.from_pretrained(
        backbone, template=load_template(template), verbalizer=load_verbalizer(paired_verbalizer(template)),
        **MODES[mode], **options,
    )  # fmt: skip


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def _alternate(sides: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Seconds of every run of each side, the sides taking turns ``repeats`` times."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def section_plain(args, save) -> dict[str, Any]:
    """(a) PromptModel against a plain loop over the same prompts: in input order, and length-sorted."""
    examples = load_task("sst2", "dev", limit=args.limit)
    model = load_model(args.backbone, args.template)
    if model.head != "causal":
        raise SystemExit("the plain section compares against a causal-LM loop; pass a causal backbone")
    prompts = model.encoder.encode_each([model.template.render(e) for e in examples])
    if any(len(p.ids) != 1 for p in prompts):
        raise SystemExit("the plain section needs single-token label words and a template with the mask at the end")
    size = args.batch_size
    in_order = [model.encoder.collate(prompts[i : i + size]) for i in range(0, len(prompts), size)]
    by_length = [batch for _, batch in model.batches(examples)]  # promptkit's own batches: sorted, token budget
    word_ids = torch.tensor([ids[0] for ids in model.table.ids(True)])
    times = _alternate(
        {
            "plain_unsorted": lambda: plain_loop(model.backbone, in_order, word_ids),
            "plain_sorted": lambda: plain_loop(model.backbone, by_length, word_ids),
            "promptkit": lambda: model.predict_proba(examples, progress=False),
        },
        args.repeats,
    )
    best = {k: min(v) for k, v in times.items()}
    return {
        "n_examples": len(examples), "plain_batch_size": args.batch_size, "times_s": times, "best_s": best,
        "examples_per_s": {k: len(examples) / v for k, v in best.items()},
        "ratio_vs_unsorted": best["plain_unsorted"] / best["promptkit"],
        "ratio_vs_sorted": best["plain_sorted"] / best["promptkit"],
    }  # fmt: skip


def section_demos(args, save) -> dict[str, Any]:
    """(b) SST-2 dev with one demonstration per class before every prompt: prefix reuse on against off."""
    examples = load_task("sst2", "dev", limit=args.limit)
    model = load_model(args.backbone, args.template)
    model.template = with_demonstrations(
        model.template, model.verbalizer, load_task("sst2", "train"), per_class=1, seed=args.seed
    )
    probs: dict[str, np.ndarray] = {}

    def run(reuse: bool):
        model.prefix_reuse.enabled = reuse
        probs[f"reuse_{'on' if reuse else 'off'}"] = model.predict_proba(examples, progress=False)

    times = _alternate({"reuse_off": lambda: run(False), "reuse_on": lambda: run(True)}, args.repeats)
    best = {k: min(v) for k, v in times.items()}
    on, off = probs["reuse_on"], probs["reuse_off"]
    labels = np.array([model.verbalizer.labels.index(e["label"]) for e in examples])
    return {
        "n_examples": len(examples), "demonstration_text": model.template.render(examples[0]).to_text(),
        "times_s": times, "best_s": best, "examples_per_s": {k: len(examples) / v for k, v in best.items()},
        "speedup": best["reuse_off"] / best["reuse_on"],
        "identical_predictions": bool((on.argmax(1) == off.argmax(1)).all()),
        "max_abs_probability_difference": float(np.abs(on - off).max()),
        "accuracy": float((on.argmax(1) == labels).mean()),
    }  # fmt: skip


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One setting in this (fresh) process: load, score, and the process's peak RSS."""
    torch.manual_seed(spec.get("seed", 0))
    start = time.perf_counter()
    model = load_model(spec["backbone"], spec["template"], spec["mode"])
    load_s = time.perf_counter() - start
    examples = load_task("sst2", spec["split"], limit=spec.get("n"))
    if spec.get("repeat", 1) > 1:  # longer prompts: the text said several times
        examples = [{**e, "text": " ".join([e["text"]] * spec["repeat"])} for e in examples]
    start = time.perf_counter()
    probs = model.predict_proba(examples, progress=False)
    score_s = time.perf_counter() - start
    predicted = probs.argmax(1)
    labels = np.array([model.verbalizer.labels.index(e["label"]) for e in examples])
    tokens = sum(len(model.tokenizer(model.template.render(e).to_text())["input_ids"]) for e in examples[:200])
    return {
        **spec, "n": len(examples), "load_s": load_s, "score_s": score_s, "examples_per_s": len(examples) / score_s,
        "mean_prompt_tokens": tokens / min(200, len(examples)), "accuracy": float((predicted == labels).mean()),
        "peak_rss_mib": peak_rss_mib(), "predictions": predicted.tolist() if len(examples) <= 2000 else None,
    }  # fmt: skip


def in_fresh_process(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`measure` in a new Python process (its own peak RSS)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--worker", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"worker for {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def section_precision(args, save) -> dict[str, Any]:
    """(d) the precision modes (:data:`MODES`) on SST-2 dev: accuracy, speed and peak RSS, each in a fresh process."""
    runs = {}
    for mode in args.modes:
        runs[mode] = in_fresh_process(
            {"backbone": args.backbone, "template": args.template, "mode": mode, "split": "dev", "n": args.limit}
        )
        print(f"precision {mode}: {runs[mode]['examples_per_s']:.1f} ex/s, {runs[mode]['peak_rss_mib']:.0f} MiB")
    base = runs.get("float32")
    for run in runs.values():
        if base is not None:
            run["speedup_vs_float32"] = run["examples_per_s"] / base["examples_per_s"]
            run["accuracy_change_points"] = 100 * (run["accuracy"] - base["accuracy"])
            same = np.array(run["predictions"]) == np.array(base["predictions"])
            run["agreement_with_float32"] = float(same.mean())
    for run in runs.values():
        run.pop("predictions")
    return {"runs": runs, "cpu_flags": _cpu_flags()}


def section_scaling(args, save) -> dict[str, Any]:
    """(c) examples/s and peak RSS against prompt length, then against the number of examples (ascending).

    ``save`` gets the section so far after every measurement: the largest N takes longest.
    """
    out: dict[str, Any] = {"by_length": {}, "by_n": {}}
    for repeat in args.repeats_text:
        out["by_length"][str(repeat)] = run = in_fresh_process(
            {"backbone": args.backbone, "template": args.template, "mode": "float32", "split": "dev",
             "n": args.length_n, "repeat": repeat}
        )  # fmt: skip
        run.pop("predictions")
        print(f"length x{repeat}: {run['mean_prompt_tokens']:.0f} tokens, {run['examples_per_s']:.1f} ex/s")
        save(out)
    for n in sorted(args.sizes):
        out["by_n"][str(n)] = run = in_fresh_process(
            {"backbone": args.backbone, "template": args.template, "mode": "float32", "split": "train", "n": n}
        )
        run.pop("predictions")
        print(f"scaling N={run['n']}: {run['examples_per_s']:.1f} ex/s, peak RSS {run['peak_rss_mib']:.0f} MiB")
        save(out)
    return out


def _cpu_flags() -> list[str]:
    """The CPU's vector extensions that decide reduced-precision speed (AVX-512 BF16/VNNI, AMX, AVX2)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags.split(":")[1].split() if f.startswith(("avx", "amx")) or "vnni" in f)


SECTIONS = {"plain": section_plain, "demos": section_demos, "precision": section_precision, "scaling": section_scaling}
