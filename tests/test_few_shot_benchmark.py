"""Smoke test of benchmarks/few_shot.py on the tiny offline MLM: it runs end to end and writes its files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from few_shot import main  # noqa: E402

METHODS = ["zero_shot", "prompt_finetune", "head_finetune"]


@pytest.mark.real_model
def test_few_shot_benchmark_writes_rows_and_table(tmp_path):
    argv = ["--backbone", "splade-tiny", "--tasks", "sst2", "--k", "4", "--seeds", "13", "--methods", *METHODS]
    main([*argv, "--steps", "2", "--eval-every", "1", "--eval-limit", "16", "--out", str(tmp_path)])

    payload = json.loads((tmp_path / "few_shot_splade-tiny.json").read_text())
    assert payload["config"]["eval_limit"] == 16
    assert [run["method"] for run in payload["runs"]] == METHODS
    for run in payload["runs"]:
        assert 0.0 <= run["accuracy"] <= 1.0 and 0.0 <= run["macro_f1"] <= 1.0
        assert (run["task"], run["k"], run["seed"], run["n_train"], run["n_eval"]) == ("sst2", 4, 13, 8, 16)
        assert run["seconds"] > 0
    assert {(a["method"], a["n_seeds"]) for a in payload["aggregates"]} == {(m, 1) for m in METHODS}
    table = (tmp_path / "few_shot_splade-tiny.md").read_text()
    assert all(f"| sst2 | {method} |" in table for method in METHODS)


def test_template_override_is_checked():
    with pytest.raises(SystemExit):
        main(["--template", "sst2=no_such_template"])
