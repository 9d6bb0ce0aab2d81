"""Tests for promptkit.tasks and promptkit.examples against the real benchmark files in shared/data."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from promptkit import tasks
from promptkit.errors import DataError, PromptkitError
from promptkit.examples import as_examples, sample_k_shot
from promptkit.tasks import (
    ENV_VAR,
    TASKS,
    TaskInfo,
    clean_ag_news_text,
    data_root,
    get_task,
    list_tasks,
    load_task,
)

REPO = Path(__file__).resolve().parents[1]
SNLI_DEV_ROWS = 9842  # the staged dev.jsonl already lacks the 158 '-' rows of the 10,000


@pytest.fixture(scope="module")
def root() -> Path:
    """The real data folder; skip the real-data tests where it is not present."""
    try:
        return data_root()
    except DataError as err:
        pytest.skip(f"benchmark data not available: {err}")


@pytest.fixture(scope="module")
def sst2_train(root: Path) -> list[dict]:
    return load_task("sst2", "train", root=root)


# --- data root ----------------------------------------------------------------------------


def test_data_root_finds_shared_data(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    found = data_root()
    assert found.parts[-2:] == ("shared", "data")
    assert (found / "sst2" / "dev.tsv").is_file()


def test_env_var_overrides_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "dev.tsv").write_text("sentence\tlabel\ngood fun \t1\ndull \t0\n")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert data_root() == tmp_path
    assert load_task("sst2") == [{"text": "good fun", "label": 1}, {"text": "dull", "label": 0}]


def test_env_var_pointing_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(DataError, match=ENV_VAR):
        data_root()


def test_no_data_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tasks, "__file__", str(tmp_path / "pkg" / "tasks.py"))
    with pytest.raises(DataError, match=f"set \\${ENV_VAR}"):
        data_root()


def test_missing_file_names_path_and_env_var(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_task("rte", "val", root=tmp_path)
    assert str(tmp_path / "rte" / "superglue" / "val.jsonl") in str(info.value)
    assert ENV_VAR in str(info.value)


# --- registry -----------------------------------------------------------------------------


def test_registry() -> None:
    assert list_tasks() == ["ag_news", "boolq", "cb", "mnli", "ocnli", "rte", "snli", "sst2", "tnews"]
    assert {n: (t.default_eval_split, t.default_train_split) for n, t in TASKS.items()} == {
        "sst2": ("dev", "train"),
        "ag_news": ("test", None),
        "rte": ("val", "train"),
        "cb": ("val", "train"),
        "boolq": ("val", "fewglue_train"),
        "mnli": ("dev_matched", None),
        "snli": ("dev", None),
        "tnews": ("test_public", "train_0"),
        "ocnli": ("test_public", "train_0"),
    }
    for task in TASKS.values():
        assert isinstance(task, TaskInfo)
        assert task.default_eval_split in task.splits
        assert task.default_train_split is None or task.default_train_split in task.splits
    assert get_task("boolq").labels == (False, True)
    assert set(get_task("cb").splits) == {"train", "val", "test", "fewglue_train", "fewglue_dev32"}
    with pytest.raises(AttributeError):
        get_task("sst2").name = "x"  # type: ignore[misc]


def test_unknown_task_suggests() -> None:
    with pytest.raises(DataError, match="Did you mean 'sst2'") as info:
        get_task("sst")
    assert "ag_news" in str(info.value) and isinstance(info.value, (ValueError, PromptkitError))


def test_unknown_split_suggests() -> None:
    with pytest.raises(DataError, match="Did you mean 'val'") as info:
        load_task("rte", "valid")
    assert "fewglue_dev32" in str(info.value)


# --- real data ----------------------------------------------------------------------------

COUNTS = [
    ("sst2", "dev", {0: 428, 1: 444}),
    ("ag_news", "test", {1: 1900, 2: 1900, 3: 1900, 4: 1900}),
    ("rte", "val", {"entailment": 146, "not_entailment": 131}),
    ("rte", "train", {"entailment": 1249, "not_entailment": 1241}),
    ("rte", "fewglue_train", {"entailment": 13, "not_entailment": 19}),
    ("cb", "val", {"entailment": 23, "contradiction": 28, "neutral": 5}),
    ("cb", "fewglue_dev32", {"entailment": 17, "contradiction": 13, "neutral": 2}),
    ("boolq", "val", {True: 2033, False: 1237}),
    ("boolq", "fewglue_train", {True: 18, False: 14}),
    ("mnli", "dev_matched", {"entailment": 3479, "contradiction": 3213, "neutral": 3123}),
    ("snli", "dev", {"entailment": 3329, "contradiction": 3278, "neutral": 3235}),
]


@pytest.mark.parametrize(("name", "split", "per_class"), COUNTS)
def test_counts_fields_labels(root: Path, name: str, split: str, per_class: dict) -> None:
    task = get_task(name)
    rows = load_task(name, split, root=root)
    assert Counter(r["label"] for r in rows) == per_class
    assert set(per_class) == set(task.labels)
    label_type = type(task.labels[0])
    assert all(type(r["label"]) is label_type for r in rows)
    for row in rows:
        assert set(row) - {"idx"} == {*task.fields, "label"}
        assert all(isinstance(row[f], str) and row[f] == row[f].strip() for f in task.fields)


def test_default_split_and_exact_totals(root: Path, sst2_train: list[dict]) -> None:
    assert len(sst2_train) == 67349
    assert len(load_task("sst2", root=root)) == 872
    assert len(load_task("mnli", root=root)) == 9815
    assert len(load_task("boolq", root=root)) == 3270
    assert len(load_task("snli", root=root)) == SNLI_DEV_ROWS
    assert [r["idx"] for r in load_task("rte", root=root, limit=3)] == [0, 1, 2]
    assert load_task("sst2", "dev", root=root, limit=0) == []


def test_unlabeled_splits(root: Path) -> None:
    test = load_task("sst2", "test", root=root)
    assert len(test) == 1821 and {r["label"] for r in test} == {None}
    assert test[0] == {"text": "uneasy mishmash of styles and genres .", "label": None, "idx": 0}
    assert {r["label"] for r in load_task("rte", "test", root=root)} == {None}
    assert len(load_task("cb", "test", root=root)) == 250


def test_ag_news_text_is_cleaned(root: Path) -> None:
    rows = load_task("ag_news", root=root)
    text = " ".join(r["title"] + " " + r["description"] for r in rows)
    assert "\\" not in text and " #39;" not in text and " quot;" not in text
    assert "&lt;" not in text and "  " not in text
    assert rows[1]["description"].startswith("SPACE.com - TORONTO, Canada -- A second team")
    assert "$10 million" in rows[1]["description"]
    assert "Japan's" in clean_ag_news_text("Japan #39;s")
    assert clean_ag_news_text("AT amp;T said  quot;hi quot; \\\\$5\\\\x") == 'AT&T said "hi" $5 x'


def test_snli_drops_no_consensus_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "snli").mkdir()
    lines = [{"premise": "A", "hypothesis": "B", "label": lab} for lab in ("neutral", "-", "entailment", "-")]
    (tmp_path / "snli" / "dev.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    with caplog.at_level(logging.INFO, logger="promptkit.tasks"):
        rows = load_task("snli", root=tmp_path)
    assert [r["label"] for r in rows] == ["neutral", "entailment"]
    assert "dropped 2 rows" in caplog.text


def test_bad_label_in_labelled_split_is_error(tmp_path: Path) -> None:
    (tmp_path / "mnli").mkdir()
    (tmp_path / "mnli" / "dev_matched.jsonl").write_text(
        json.dumps({"premise": "A", "hypothesis": "B", "label": "-"}) + "\n"
    )
    with pytest.raises(DataError, match="'-' is not one of"):
        load_task("mnli", root=tmp_path)


# --- k-shot -------------------------------------------------------------------------------


def test_k_shot_counts_and_determinism(sst2_train: list[dict]) -> None:
    first = sample_k_shot(sst2_train, 16, seed=13)
    assert len(first) == 32 and Counter(r["label"] for r in first) == {0: 16, 1: 16}
    assert first == sample_k_shot(sst2_train, 16, seed=13)
    assert first != sample_k_shot(sst2_train, 16, seed=42)
    labels = [r["label"] for r in first]
    assert labels != sorted(labels)  # shuffled, not grouped by class
    assert all(r in sst2_train for r in first)
    first[0]["text"] = "mutated"
    assert all(r["text"] != "mutated" for r in sst2_train)


def test_k_shot_independent_of_hash_seed(root: Path) -> None:
    code = (
        "from promptkit import load_task, sample_k_shot; "
        f"rows = load_task('cb', 'train', root={str(root)!r}); "
        "print([r['idx'] for r in sample_k_shot(rows, 4, seed=1)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_k_shot_too_few(root: Path) -> None:
    rows = load_task("cb", "fewglue_train", root=root)  # neutral has only 3 rows
    with pytest.raises(DataError, match="'neutral' has only 3 examples.*allow_fewer=True"):
        sample_k_shot(rows, 4, seed=0)
    few = sample_k_shot(rows, 4, seed=0, allow_fewer=True)
    assert Counter(r["label"] for r in few) == {"entailment": 4, "contradiction": 4, "neutral": 3}


def test_k_shot_input_errors(root: Path) -> None:
    with pytest.raises(DataError, match="label None"):
        sample_k_shot(load_task("rte", "test", root=root, limit=5), 1, seed=0)
    with pytest.raises(DataError, match="Did you mean label_key='label'"):
        sample_k_shot([{"text": "a", "label": 1}], 1, seed=0, label_key="labels")
    with pytest.raises(DataError, match="positive int"):
        sample_k_shot([{"label": 1}], 0, seed=0)


def test_k_shot_accepts_dataframe() -> None:
    df = pd.DataFrame({"text": list("abcdef"), "label": np.array([0, 1] * 3, dtype=np.int64)})
    out = sample_k_shot(df, 2, seed=0)
    assert Counter(r["label"] for r in out) == {0: 2, 1: 2}
    assert all(type(r["label"]) is int for r in out)


# --- as_examples --------------------------------------------------------------------------


def test_as_examples_dicts_and_lists() -> None:
    row = {"text": "great", "label": 1}
    assert as_examples(row) == [row] and as_examples(row)[0] is not row
    assert as_examples([row, row]) == [row, row]
    assert as_examples((row,)) == [row]
    with pytest.raises(DataError, match="Item 1 is a str"):
        as_examples([row, "oops"])


def test_as_examples_dataframe() -> None:
    df = pd.DataFrame({"text": ["a", "b"], "label": [1, 0], "score": [0.5, np.nan]})
    rows = as_examples(df)
    assert rows == [{"text": "a", "label": 1, "score": 0.5}, {"text": "b", "label": 0, "score": None}]
    assert type(rows[0]["label"]) is int and type(rows[0]["score"]) is float
    assert as_examples(df.iloc[0]) == [{"text": "a", "label": 1, "score": 0.5}]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("a review", "got a str; pass a dict like {'text': ...}"),
        (b"bytes", "got a bytes"),
        (42, "Unsupported data type builtins.int"),
        ({"a", "b"}, "Unsupported data type builtins.set"),
    ],
)
def test_as_examples_rejects(bad: object, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("{", "\\{").replace(".", "\\.")):
        as_examples(bad)


def _fake(module: str, name: str, base: type) -> type:
    return type(name, (base,), {"__module__": module})


def test_as_examples_dataset_like() -> None:
    dataset_dict = _fake("datasets.dataset_dict", "DatasetDict", dict)({"train": [], "test": []})
    expected = r"splits \['train', 'test'\]; did you mean data\['train'\]"
    with pytest.raises(DataError, match=expected):
        as_examples(dataset_dict)
    dataset = _fake("datasets.arrow_dataset", "Dataset", list)([{"text": "x", "label": 0}])
    assert as_examples(dataset) == [{"text": "x", "label": 0}]


def test_as_examples_real_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    assert as_examples(ds) == [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    with pytest.raises(DataError, match="did you mean data\\['train'\\]"):
        as_examples(datasets.DatasetDict({"train": ds}))
