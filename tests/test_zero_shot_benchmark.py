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


def test_fewclue_tnews_is_scored_on_test_public_with_its_chinese_templates(tiny_causal, bpe_tokenizer, tmp_path):
    """TNEWS from FewCLUE: 15 classes, multi-token Hanzi label words, every calibration."""
    folder = tmp_path / "tiny"
    tiny_causal.save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)
    payload = main(["--backbone", str(folder), "--task", "tnews", "--templates", "tnews/category_end", "tnews/prefix",
                    "--limit", "4", "--out", str(tmp_path / "out")])  # fmt: skip
    assert payload["split"] == "test_public" and payload["n_examples"] == 4
    assert [(r["template"], r["calibration"]) for r in payload["results"]] == [
        (name, calibration)
        for name in ("tnews/category_end", "tnews/prefix")
        for calibration in ("none", "content_free", "batch")
    ]
    for row in payload["results"]:
        assert len(row["confusion_matrix"]) == 15 and sum(map(sum, row["confusion_matrix"])) == 4
    assert (tmp_path / "out" / "zero_shot_tnews_tiny.md").read_text().count("| tnews/prefix |") == 3
