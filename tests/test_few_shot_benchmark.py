"""Smoke test of benchmarks/few_shot.py on the tiny offline MLM: it runs end to end and writes its files."""

from __future__ import annotations

import json
import re
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
        if run["method"] in ("prompt_finetune", "head_finetune"):  # dev accuracy after steps 1 and 2
            assert [step for step, _ in run["dev_scores"]] == [1, 2]
            assert all(0.0 <= score <= 1.0 for _, score in run["dev_scores"])
        if run["method"] == "zero_shot":
            assert "dev_scores" not in run
    assert {(a["method"], a["n_seeds"]) for a in payload["aggregates"]} == {(m, 1) for m in METHODS}
    table = (tmp_path / "few_shot_splade-tiny.md").read_text()
    assert all(f"| sst2 | {method} |" in table for method in METHODS)


@pytest.mark.real_model
def test_prefix_tuning_is_skipped_with_the_reason_on_a_masked_lm(tmp_path):
    argv = ["--backbone", "splade-tiny", "--tasks", "sst2", "--k", "4", "--seeds", "13", "--eval-limit", "8"]
    payload = main([*argv, "--methods", "zero_shot", "prefix_tuning", "--out", str(tmp_path)])
    assert [run["method"] for run in payload["runs"]] == ["zero_shot"]
    assert payload["skipped"] == {"prefix_tuning": "prefix_tuning needs a causal LM; splade-tiny is a masked LM"}
    assert "skipped prefix_tuning: prefix_tuning needs a causal LM" in " ".join(payload["notes"])


def test_template_override_is_checked():
    with pytest.raises(SystemExit):
        main(["--template", "sst2=no_such_template"])


@pytest.mark.real_model
def test_merge_reuses_matching_runs_and_runs_the_rest(tmp_path):
    base = ["--backbone", "splade-tiny", "--tasks", "sst2", "--k", "4", "--steps", "2", "--eval-every", "1"]
    base += ["--eval-limit", "16", "--methods", "zero_shot", "prompt_finetune"]
    first, second = tmp_path / "first", tmp_path / "second"
    main([*base, "--seeds", "13", "--out", str(first)])
    earlier = json.loads((first / "few_shot_splade-tiny.json").read_text())["runs"]

    payload = main(
        [*base, "--seeds", "13", "21", "--out", str(second), "--merge", str(first / "few_shot_splade-tiny.json")]
    )
    runs = {(run["seed"], run["method"]): run for run in payload["runs"]}
    assert set(runs) == {(seed, m) for seed in (13, 21) for m in ("zero_shot", "prompt_finetune")}
    for run in earlier:  # seed 13 is taken from the first file, measured time and all
        assert runs[(13, run["method"])]["seconds"] == run["seconds"]
    assert runs[(21, "zero_shot")]["reused"]  # same evaluation set: scored once
    assert not runs[(21, "prompt_finetune")]["reused"]
    assert runs[(21, "prompt_finetune")]["settings"]["learning_rate"] == 2e-5

    other_rate = main([*base, "--seeds", "13", "--lr-prompt-finetune", "1e-4", "--out", str(second),
                       "--merge", str(first / "few_shot_splade-tiny.json")])  # fmt: skip
    retrained = next(run for run in other_rate["runs"] if run["method"] == "prompt_finetune")
    assert retrained["settings"]["learning_rate"] == 1e-4
    assert retrained["seconds"] != runs[(13, "prompt_finetune")]["seconds"]  # different settings: not reused


@pytest.mark.real_model
def test_demonstrations_reach_every_prompt_method_and_zero_shot_is_scored_per_seed(tmp_path):
    argv = ["--backbone", "splade-tiny", "--tasks", "sst2", "--k", "4", "--seeds", "13", "21", "--eval-limit", "8"]
    payload = main([*argv, "--methods", "zero_shot", "head_finetune", "--steps", "1", "--eval-every", "0",
                    "--demonstrations", "1", "--out", str(tmp_path)])  # fmt: skip
    zero_shot = [run for run in payload["runs"] if run["method"] == "zero_shot"]
    assert [run["reused"] for run in zero_shot] == [False, False]  # each seed's demonstrations differ
    assert all(run["settings"]["demonstrations"] == 1 for run in zero_shot)
    head = next(run for run in payload["runs"] if run["method"] == "head_finetune")
    assert "demonstrations" not in head["settings"]  # not a prompt method
    assert any("1 in-context demonstration(s) per class" in note for note in payload["notes"])


def test_table_shows_spread_over_seeds_and_marks_single_seed_cells():
    from _few_shot_report import aggregate, markdown

    def row(seed, method, accuracy):
        return {"task": "cb", "k": 16, "seed": seed, "method": method, "accuracy": accuracy,
                "macro_f1": accuracy / 2, "seconds": 10.0}  # fmt: skip

    rows = [row(13, "lora", 0.5), row(21, "lora", 0.7), row(13, "setfit", 0.6)]
    table = markdown(aggregate(rows), ["cb"], ["lora", "setfit"], [16], [])
    assert "| cb | lora | 60.0 ± 14.1 (F1 30.0 ± 7.1) · 10 s |" in table
    assert "| cb | setfit | 60.0 (F1 30.0) (1 seed) · 10 s |" in table


def test_fewclue_tasks_train_on_fewclues_own_pairs(tiny_causal, bpe_tokenizer, tmp_path):
    """Seed 13 -> train_0 / dev_0, seed 21 -> train_1 / dev_1, scored on test_public; K is FewCLUE's."""
    folder = tmp_path / "tiny"
    tiny_causal.save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)
    argv = ["--backbone", str(folder), "--tasks", "ocnli", "--seeds", "13", "21", "--steps", "1"]
    payload = main([*argv, "--methods", "zero_shot", "head_finetune", "--eval-every", "1", "--eval-limit", "6",
                    "--out", str(tmp_path / "out")])  # fmt: skip
    runs = {(run["seed"], run["method"]): run for run in payload["runs"]}
    assert set(runs) == {(seed, m) for seed in (13, 21) for m in ("zero_shot", "head_finetune")}
    for run in runs.values():
        assert (run["task"], run["k"], run["n_train"], run["n_dev"], run["n_eval"]) == ("ocnli", "fewclue", 32, 32, 6)
    assert runs[(21, "zero_shot")]["reused"]  # the same test_public rows: scored once
    assert payload["config"]["splits"]["ocnli"]["pairs"] == {"13": "train_0 / dev_0", "21": "train_1 / dev_1"}
    assert payload["config"]["templates"] == {"ocnli": "ocnli/question_end"}
    table = (tmp_path / "out" / "few_shot_tiny.md").read_text()
    # Only FewCLUE tasks: no empty K=16 column.
    assert "| task | method | FewCLUE sets |" in table and "K=16" not in table
    assert re.search(r"^\| ocnli \| head_finetune \| \d+\.\d .* \|$", table, re.M)  # the one cell is filled
    assert any("FewCLUE" in note for note in payload["notes"])


def test_fewclue_tasks_take_only_the_five_pair_seeds():
    with pytest.raises(SystemExit):
        main(["--tasks", "tnews", "--seeds", "7"])
