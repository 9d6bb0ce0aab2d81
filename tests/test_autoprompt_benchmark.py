"""benchmarks/autoprompt.py end to end on a tiny model: four prompts scored, settings and search figures written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from autoprompt import main, samples  # noqa: E402


def test_search_and_select_samples_are_disjoint_and_seeded():
    train, select = samples(3, 20, 10)
    assert len(train) == 20 and len(select) == 10
    assert not {r["text"] for r in train} & {r["text"] for r in select} - {""}
    assert samples(3, 20, 10) == (train, select) and samples(4, 20, 10) != (train, select)


def test_tiny_run_writes_json_and_markdown(tiny_causal, bpe_tokenizer, tmp_path):
    folder = tmp_path / "tiny"
    tiny_causal.save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)
    payload = main(["--backbone", str(folder), "--triggers", "2", "--iterations", "2", "--candidates", "2",
                    "--batch-size", "4", "--dev-every", "1", "--train-size", "8", "--select-size", "4",
                    "--eval-limit", "8", "--out", str(tmp_path / "out")])  # fmt: skip
    assert [r["prompt"] for r in payload["results"]] == [
        p for p in ("base", "best_manual", "triggers", "triggers+words") for _ in ("none", "content_free")
    ]
    assert len(payload["history"]) == 2 and payload["settings"]["iterations"] == 2
    assert "{{ trigger" not in payload["triggers"] and payload["candidates_per_second"] > 0
    written = json.loads((tmp_path / "out" / "autoprompt_sst2_tiny.json").read_text())
    assert written["label_words"].keys() == {"0", "1"}
    assert "Settings:" in (tmp_path / "out" / "autoprompt_sst2_tiny.md").read_text()
    assert (tmp_path / "out" / "autoprompt_sst2_tiny.png").stat().st_size > 0
