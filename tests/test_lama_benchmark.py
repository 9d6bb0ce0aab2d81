"""benchmarks/lama.py: template conversion, the one-token label set, rank metrics, and a tiny run on real LAMA facts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from lama import causal_ready, label_set, main, metrics, prompt_text  # noqa: E402

from promptkit.errors import DataError  # noqa: E402


def test_lama_templates_become_promptkit_templates():
    assert prompt_text("[X] was born in [Y] .", "mlm") == "{{ sub }} was born in {{ mask }} ."
    assert prompt_text("[X] was born in [Y] .", "causal") == "{{ sub }} was born in {{ mask }}"
    assert prompt_text("", "causal", 5) == "{{ sub }} {{ trigger(5) }} {{ mask }}"
    assert prompt_text("", "mlm", 3) == "{{ sub }} {{ trigger(3) }} {{ mask }} ."
    assert causal_ready("[X] was born in [Y] .") and causal_ready("The capital of [X] is [Y] .")
    assert not causal_ready("[X] is [Y] citizen .") and not causal_ready("[X] and [Y] are twin cities .")


def test_label_set_keeps_one_token_objects_once_per_token(bpe_tokenizer, wordpiece_tokenizer):
    objects = ["Paris", "London", "Paris", "Zzyzxqwv", "Berlin"]
    assert label_set(bpe_tokenizer, objects) == ["Paris", "London", "Berlin"]  # the made-up name is several tokens
    assert label_set(wordpiece_tokenizer, ["Paris", "paris", "London"]) == ["Paris", "London"]  # uncased: one token


def test_rank_metrics():
    found = metrics(torch.tensor([1, 2, 10, 11]))
    assert found == pytest.approx({"p_at_1": 0.25, "p_at_10": 0.75, "mrr": (1 + 1 / 2 + 1 / 10 + 1 / 11) / 4})


def test_tiny_run_on_real_facts_writes_per_relation_and_overall_figures(tiny_causal, bpe_tokenizer, tmp_path):
    folder = tmp_path / "tiny"
    tiny_causal.save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)
    payload = main(["--backbone", str(folder), "--relations", "P19", "P27", "--iterations", "1", "--candidates", "2",
                    "--batch-size", "4", "--dev-every", "1", "--dev-limit", "4", "--test-limit", "6",
                    "--out", str(tmp_path / "out")])  # fmt: skip
    assert payload["skipped"] == ["P27"]  # "[X] is [Y] citizen ." has no [Y] at the end
    assert [(r["relation"], r["prompt"]) for r in payload["results"]] == [("P19", "manual"), ("P19", "autoprompt")]
    for row in payload["results"]:
        assert row["n_test"] == 6 and 0 <= row["p_at_1"] <= row["p_at_10"] <= 1 and 0 < row["mrr"] <= 1
    assert "trigger" not in payload["results"][1]["template"]
    kept, total = payload["kept"]["P19"]["test"]
    assert 0 < kept <= total == 780 and payload["n_labels"] > 10
    assert {o["prompt"] for o in payload["overall"]} == {"manual", "autoprompt"}
    assert json.loads((tmp_path / "out" / "lama_tiny.json").read_text())["head"] == "causal"
    assert (tmp_path / "out" / "lama_tiny.png").stat().st_size > 0
    with pytest.raises(DataError, match="not a LAMA relation"):
        main(["--backbone", str(folder), "--relations", "P9999", "--out", str(tmp_path / "out")])
