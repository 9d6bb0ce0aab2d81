"""benchmarks/zero_shot.py on a tiny model: every calibration scored with sklearn metrics, JSON, table and PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from zero_shot import main  # noqa: E402

from promptkit.data import where  # noqa: E402


def test_tiny_run_writes_scores_confusion_matrices_and_a_plot(tiny_causal, bpe_tokenizer, tmp_path):
    where("sst2", "dev")  # without an SST-2 source this is a skip (see conftest), not the demo
    folder = tmp_path / "tiny"
    tiny_causal.save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    payload = main(["--backbone", str(folder), "--task", "sst2", "--templates", "sst2/it_was", "--limit", "6",
                    "--out", str(out)])  # fmt: skip
    assert [r["calibration"] for r in payload["results"]] == ["none", "content_free", "batch"]
    for row in payload["results"]:
        matrix = row["confusion_matrix"]  # rows: true label, columns: predicted
        assert sum(map(sum, matrix)) == 6 and row["accuracy"] == sum(matrix[i][i] for i in range(2)) / 6
    assert json.loads((out / "zero_shot_sst2_tiny.json").read_text())["n_examples"] == 6
    assert (out / "zero_shot_sst2_tiny.png").stat().st_size > 0 and "| sst2/it_was |" in (
        out / "zero_shot_sst2_tiny.md"
    ).read_text()
