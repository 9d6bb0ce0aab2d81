"""The ``promptkit`` command line on a tiny random-init model saved to a temporary folder.

Each command's main path and a user error run as a subprocess of the installed console
script (exit status, stdout/stderr as a user sees them); the other bad-input cases call
:func:`promptkit.cli.main`, the function the console script runs, in this process (each
subprocess pays the import of torch and transformers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from promptkit import PromptModel, Verbalizer
from promptkit.catalog import load_template, load_verbalizer
from promptkit.cli import cli, main

SCRIPT = Path(sys.executable).with_name("promptkit")
ROWS = [
    {"text": "a gorgeous, witty, seductive movie.", "label": 1},
    {"text": "a dull, tedious mess.", "label": 0},
    {"text": "the best film of the year.", "label": 1},
    {"text": "i want my two hours back.", "label": 0},
    {"text": "sharp, funny and moving.", "label": 1},
    {"text": "flat and lifeless.", "label": 0},
]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """A user error: non-zero status, one line on stderr, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """``promptkit ARGS`` through :func:`promptkit.cli.main` in this process."""
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["promptkit", *args], code, captured.out, captured.err)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_causal, bpe_tokenizer) -> Path:
    """A folder with a tiny saved promptkit model (``tiny``), its bare backbone (``backbone``)
    and the rows as ``rows.jsonl``."""
    root = tmp_path_factory.mktemp("cli")
    model = PromptModel(
        tiny_causal,
        bpe_tokenizer,
        load_template("sst2/review_sentiment"),
        load_verbalizer("sst2/positive_negative"),
        batch_size=4,
    )
    model.save_pretrained(str(root / "tiny"))
    tiny_causal.save_pretrained(root / "backbone")
    bpe_tokenizer.save_pretrained(root / "backbone")
    write_jsonl(root / "rows.jsonl", ROWS)
    return root


def test_console_script_is_installed():
    assert SCRIPT.is_file(), f"{SCRIPT} missing: reinstall with `pip install -e .` (setup.cfg console_scripts)"


def test_templates_lists_the_catalog_with_a_rendered_example():
    result = run("templates", "sst2")
    assert result.returncode == 0, result.stderr
    assert "sst2/review_sentiment" in result.stdout and "(verbalizer sst2/positive_negative" in result.stdout
    assert "Sentiment: [MASK]" in result.stdout  # rendered on the catalog file's example
    assert "it 's a charming and often affecting journey ." in result.stdout


def test_unknown_task_is_one_line_with_the_closest_name(capsys):
    line = one_error_line(in_process(capsys, "templates", "sst3"))
    assert "unknown task 'sst3'" in line and "Did you mean 'sst2'?" in line


def test_predict_streams_predictions_with_probabilities(work, tmp_path):
    out = tmp_path / "out.jsonl"
    result = run("predict", "--model", str(work / "tiny"), str(work / "rows.jsonl"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected = PromptModel.from_pretrained(str(work / "tiny")).predict_proba(ROWS)
    assert len(records) == len(ROWS)
    for row, record, proba in zip(ROWS, records, expected):
        assert record["text"] == row["text"] and record["label"] == row["label"]  # input fields kept
        assert list(record["probabilities"]) == ["0", "1"]
        np.testing.assert_allclose(list(record["probabilities"].values()), proba, atol=1e-5)
        assert record["prediction"] == int(np.argmax(proba))


def test_predict_csv_with_a_jinja_template_and_mapping_verbalizer(work, tmp_path, capsys):
    csv_in = tmp_path / "in.csv"
    csv_in.write_text('review,label\n"good, really",1\nbad,0\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = in_process(
        capsys,
        "predict", "-m", str(work / "backbone"), "-t", "Review: {{ review }} Verdict: {{ mask }}",
        "-v", "{neg: [bad], pos: [good]}", "--calibrate", "content_free", str(csv_in), "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["review"] for r in records] == ["good, really", "bad"]
    assert all(r["prediction"] in ("neg", "pos") for r in records)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in records)


def test_a_malformed_jsonl_line_is_named_in_one_line(work, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": "broken"\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run("predict", "-m", str(work / "tiny"), str(bad), "-o", str(out))
    assert result.returncode == 1 and result.stdout == ""
    assert f"{bad}:3: not valid JSON" in one_error_line(result)
    assert not out.exists()


def test_predict_user_errors_are_one_line(work, tmp_path, capsys):
    tiny, rows = str(work / "tiny"), str(work / "rows.jsonl")
    line = one_error_line(in_process(capsys, "predict", "-m", tiny, str(tmp_path / "nope.jsonl"), "-o", "x.jsonl"))
    assert "input file" in line and "nope.jsonl" in line and "does not exist" in line
    out = tmp_path / "out.jsonl"
    line = one_error_line(in_process(capsys, "predict", "-t", "sst2/revew_sentiment", rows, "-o", str(out)))
    assert "unknown template 'sst2/revew_sentiment'" in line and "Did you mean 'review_sentiment'?" in line
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"text": "ok"}, {"txt": "typo"}])
    line = one_error_line(in_process(capsys, "predict", "-m", tiny, str(missing), "-o", str(out)))
    assert f"{missing}:2: no field 'text'" in line and "Did you mean 'txt'?" in line
    assert not out.exists() and list(tmp_path.glob(".out.jsonl*")) == []  # no partial output left behind
    result = in_process(capsys, "predict", rows)
    assert result.returncode == 2 and "Missing option '--output'" in one_error_line(result)


def test_evaluate_prints_accuracy_macro_f1_and_confusion_matrix(work):
    result = run("evaluate", "-m", str(work / "tiny"), str(work / "rows.jsonl"))
    assert result.returncode == 0, result.stderr
    predicted = PromptModel.from_pretrained(str(work / "tiny")).predict(ROWS)
    targets = [row["label"] for row in ROWS]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["examples", "6"]
    assert lines[1].split() == ["accuracy", f"{accuracy_score(targets, predicted):.4f}"]
    assert lines[2].split() == ["macro-F1", f"{f1_score(targets, predicted, average='macro', zero_division=0):.4f}"]
    matrix = confusion_matrix(targets, predicted, labels=[0, 1])
    assert lines[4].split() == ["0", "1"]
    assert [line.split() for line in lines[5:7]] == [["0", *map(str, matrix[0])], ["1", *map(str, matrix[1])]]


def test_evaluate_names_a_label_the_verbalizer_lacks(work, tmp_path, capsys):
    rows = write_jsonl(tmp_path / "rows.jsonl", [*ROWS[:2], {"text": "meh", "label": "neutral"}])
    line = one_error_line(in_process(capsys, "evaluate", "-m", str(work / "tiny"), str(rows)))
    assert f"{rows}:3: label 'neutral' is not a label of the verbalizer" in line and "[0, 1]" in line


def test_train_config_with_an_unknown_key_is_refused(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("model: smollm2-135m\nstrategy: zero_shot\noutput: out\nlearning_rat: 0.1\n")
    line = one_error_line(in_process(capsys, "train", str(config)))
    assert "unknown key 'learning_rat'" in line and "Valid keys: model, template" in line
    config.write_text("model: smollm2-135m\nstrategy: finetune\noutput: out\nparms: {}\n")
    line = one_error_line(in_process(capsys, "train", str(config)))
    assert "unknown key 'parms'. Did you mean 'params'?" in line
    config.write_text("model: smollm2-135m\nstrategy: finetune\noutput: out\ntrain: {task: sst2, splt: train}\n")
    line = one_error_line(in_process(capsys, "train", str(config)))
    assert "config 'train' has an unknown key 'splt'. Did you mean 'split'?" in line
    config.write_text("model: smollm2-135m\nstrategy: finetune\noutput: out\ntrain: nope.jsonl\n")
    line = one_error_line(in_process(capsys, "train", str(config)))
    assert f"config 'train': file '{tmp_path / 'nope.jsonl'}' does not exist" in line
    config.write_text("model: smollm2-135m\ntemplate: sst2/it_was\nstrategy: finetun\noutput: out\n")
    assert "unknown strategy 'finetun'. Did you mean 'finetune'?" in one_error_line(
        in_process(capsys, "train", str(config))
    )


def test_train_runs_a_strategy_and_saves_a_loadable_model(work, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    config = {
        "model": str(work / "backbone"),
        "template": "sst2/review_sentiment",
        "strategy": "finetune",
        "params": {"config": {"max_steps": 2, "batch_size": 3, "learning_rate": 1e-3, "seed": 1, "progress": False}},
        "train": "train.jsonl",
        "dev": {"file": "train.jsonl", "limit": 4},
        "output": "trained",
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    result = run("train", "train.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"saved the trained model to {tmp_path / 'trained'}; dev accuracy" in result.stdout
    trained = PromptModel.from_pretrained(str(tmp_path / "trained"))
    original = PromptModel.from_pretrained(str(work / "tiny"))
    assert trained.template.name == "sst2/review_sentiment"
    assert not np.allclose(trained.predict_proba(ROWS), original.predict_proba(ROWS))  # the weights moved


@pytest.mark.parametrize("command", ["templates", "predict", "evaluate", "train"])
def test_help_shows_a_real_example(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and f"promptkit {command} " in result.output


def test_a_verbalizer_alone_replaces_a_saved_models(work, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    verbalizer = "{0: [bad], 1: [good]}"
    result = in_process(
        capsys, "predict", "-m", str(work / "tiny"), "-v", verbalizer, str(work / "rows.jsonl"), "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    expected = PromptModel.from_pretrained(str(work / "tiny"), verbalizer=Verbalizer({0: ["bad"], 1: ["good"]}))
    expected = expected.predict_proba(ROWS)
    got = [list(json.loads(line)["probabilities"].values()) for line in out.read_text().splitlines()]
    np.testing.assert_allclose(got, expected, atol=1e-5)
