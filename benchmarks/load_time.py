"""How long the offline GGUF backbones take to load: the first time, and from the dense cache.

Every load runs in a fresh Python process, so nothing is warm but the OS page cache. The
first load gets an empty temporary ``$PROMPTKIT_CACHE`` (assembling the GGUF where the package
ships it in parts, dequantizing, converting the tokenizer, writing the dense cache, loading
it); the cached loads reuse that folder. ``--before`` also times transformers' own GGUF
loader (``from_pretrained(..., gguf_file=...)``, what promptkit used before gguf_dense) on
the same file. Times are seconds of ``load_backbone`` alone, after importing torch and
promptkit (transformers' model code is imported inside, as for any user): wall clock, and the
process's CPU time, which other jobs on the machine inflate far less. The load average at
the start of each load is recorded too.

    python benchmarks/load_time.py                       # gemma3-270m and smollm2-135m
    python benchmarks/load_time.py --backbones gemma3-270m --cached-repeats 5 --before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, write_results  # noqa: E402


def child(alias: str, mode: str, threads: int) -> dict:
    """Runs in the subprocess: one load; ``mode`` is ``promptkit`` or ``transformers``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptkit import load_backbone
    from promptkit.backbones import ALIASES, _bundled_path

    torch.set_num_threads(threads)
    gguf = _bundled_path(alias, ALIASES[alias])  # the shipped GGUF, or the one assembled from parts
    wall, cpu = time.perf_counter(), time.process_time()
    if mode == "transformers":
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    else:
        load_backbone(alias)
    return {"load_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def run(alias: str, mode: str, cache: str, threads: int) -> dict:
    """One load in a fresh process with ``$PROMPTKIT_CACHE=cache``."""
    env = dict(os.environ, PROMPTKIT_CACHE=cache, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    load_average = os.getloadavg()[0]
    out = subprocess.run(
        [sys.executable, __file__, "--child", alias, mode, "--threads", str(threads)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load_average": load_average}


def measure(alias: str, repeats: int, threads: int, before: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="promptkit-cache-") as cache:
        first = run(alias, "promptkit", cache, threads)
        rows.append({"backbone": alias, "load": "first (empty cache)", **first})
        cached = [run(alias, "promptkit", cache, threads) for _ in range(repeats)]
        rows.append(
            {
                "backbone": alias,
                "load": f"cached (median of {repeats})",
                "load_s": statistics.median(r["load_s"] for r in cached),
                "min_s": min(r["load_s"] for r in cached),
                "cpu_s": statistics.median(r["cpu_s"] for r in cached),
                "load_average": statistics.mean(r["load_average"] for r in cached),
                "runs_s": [r["load_s"] for r in cached],
            }
        )
        if before:
            old = run(alias, "transformers", cache, threads)
            rows.append({"backbone": alias, "load": "before: transformers gguf_file loader", **old})
    for row in rows:
        print(
            f"{row['backbone']:14} {row['load']:40} {row['load_s']:7.1f} s wall {row['cpu_s']:7.1f} s CPU"
            f"  (load average {row['load_average']:.1f})"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["gemma3-270m", "smollm2-135m"])
    parser.add_argument("--cached-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch/OMP threads in each load (default 1)")
    parser.add_argument("--before", action="store_true", help="also time transformers' GGUF loader")
    parser.add_argument("--child", nargs=2, metavar=("ALIAS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.threads)))
        return
    print(f"{args.threads} thread(s) per load; each load in a fresh process")
    rows = [row for alias in args.backbones for row in measure(alias, args.cached_repeats, args.threads, args.before)]
    payload = {"environment": environment() | {"threads": args.threads, "cpus": os.cpu_count()}, "rows": rows}
    table = markdown_table(rows, ["backbone", "load", "load_s", "min_s", "cpu_s", "load_average"])
    note = (
        f"\n\nSeconds of `load_backbone` in a fresh process after importing torch and promptkit ({args.threads} "
        f"thread(s), {os.cpu_count()} CPUs): `load_s` wall clock, `cpu_s` the process's CPU time; `load_average` "
        "is the machine's 1-minute load average at the start (other jobs slow the wall clock)."
    )
    path = write_results("load_time", payload, table + note)
    print(table + note)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
