"""`make demo` on a user's machine: a copy of promptkit outside this repository, no benchmark data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _outside import copy_checkout, offline_cache

from promptkit.backbones import cache_dir
from promptkit.data_demo import DEMO_SENTENCES, demo_rows

pytestmark = pytest.mark.real_model
ROWS = 6


def test_demo_rows_are_labelled_and_balanced() -> None:
    rows = demo_rows()
    assert len(rows) == len(DEMO_SENTENCES) >= 24
    assert sum(r["label"] for r in rows) == len(rows) // 2
    assert [r["label"] for r in demo_rows(4)] == [1, 0, 1, 0]
    assert len({r["text"] for r in rows}) == len(rows)


def test_demo_runs_anywhere(tmp_path: Path) -> None:
    """The README's demo command from a fresh copy: no shared/, no $PROMPTKIT_DATA, empty data cache, no hub."""
    clone = copy_checkout(tmp_path / "clone")
    cache = offline_cache(tmp_path / "cache", cache_dir())
    env = {k: v for k, v in os.environ.items() if k not in ("PROMPTKIT_DATA", "PROMPTKIT_HUB_MIRROR")}
    env |= {"PYTHONPATH": str(clone), "PROMPTKIT_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "benchmarks/zero_shot.py", "--task", "sst2", "--best", "--limit", str(ROWS)]
    result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "this is the DEMO" in out and "not a benchmark" in out
    table = re.findall(r"^(positive|negative) +(positive|negative) +([01]\.\d\d)  (.+)$", out, flags=re.M)
    assert len(table) == ROWS
    expected = demo_rows(ROWS)
    assert [t[3].removesuffix("  <- wrong") for t in table] == [r["text"] for r in expected]
    assert [t[0] for t in table] == ["positive" if r["label"] else "negative" for r in expected]
    for _, predicted, p_positive, _ in table:  # the prediction is the side of 0.5 p(positive) is on
        assert (predicted == "positive") == (float(p_positive) >= 0.5)
    right = sum(truth == predicted for truth, predicted, _, _ in table)
    assert f"DEMO: {right} of {ROWS} predicted as labelled" in out
    assert right >= ROWS - 2  # the real default backbone reads these plain reviews mostly right
    # ... and says how to get SST-2 for the real figure, without writing result files
    assert "For the real figure (SST-2 dev, 872 sentences)" in out and "'nyu-mll/glue'" in out
    assert "$PROMPTKIT_DATA" in out and str(cache / "data" / "sst2" / "dev.tsv") in out
    assert not (clone / "benchmarks" / "results").exists()
    assert not (cache / "data" / "hub").exists()
