"""Where load_task finds data: $PROMPTKIT_DATA, shared/data, the cache, the Hugging Face hub.

The hub is never contacted: small datasets in each hub dataset's own schema (its real column
names and label encodings, written out below from the dataset cards) are saved with
``datasets`` into a folder that ``$PROMPTKIT_HUB_MIRROR`` points the hub step at.
"""

from __future__ import annotations

import csv
import importlib
import io
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

datasets = pytest.importorskip("datasets")
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value  # noqa: E402

from promptkit import DataError, PromptkitError, load_task, tasks  # noqa: E402
from promptkit.data import (  # noqa: E402
    CACHE_ENV,
    MIRROR_ENV,
    DataUnavailableError,
    cache_root,
    hub_cache_file,
    shared_root,
    where,
)
from promptkit.data_hub import HUB, check_features  # noqa: E402
from promptkit.tasks import ENV_VAR, FEWCLUE_TASKS, TASKS, TaskInfo, get_task  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
S, I32, I64 = Value("string"), Value("int32"), Value("int64")
NLI3 = ["entailment", "neutral", "contradiction"]
TNEWS = ["100", "101", "102", "103", "104", "106", "107", "108", "109", "110", "112", "113", "114", "115", "116"]

# Each task's hub copy as its card describes it: id, config, promptkit split -> hub split, features.
HUB_SCHEMA: dict[str, tuple[str, str | None, dict[str, str], Features]] = {
    "sst2": (
        "nyu-mll/glue",
        "sst2",
        {"train": "train", "dev": "validation", "test": "test"},
        Features({"sentence": S, "label": ClassLabel(names=["negative", "positive"]), "idx": I32}),
    ),
    "ag_news": (
        "sh0416/ag_news",
        None,
        {"train": "train", "test": "test"},
        Features({"label": I64, "title": S, "description": S}),
    ),
    "rte": (
        "aps/super_glue",
        "rte",
        {"train": "train", "val": "validation", "test": "test"},
        Features(
            {"premise": S, "hypothesis": S, "idx": I32, "label": ClassLabel(names=["entailment", "not_entailment"])}
        ),
    ),
    "cb": (
        "aps/super_glue",
        "cb",
        {"train": "train", "val": "validation", "test": "test"},
        Features(
            {
                "premise": S,
                "hypothesis": S,
                "idx": I32,
                "label": ClassLabel(names=["entailment", "contradiction", "neutral"]),
            }
        ),
    ),
    "boolq": (
        "aps/super_glue",
        "boolq",
        {"train": "train", "val": "validation"},
        Features({"question": S, "passage": S, "idx": I32, "label": ClassLabel(names=["False", "True"])}),
    ),
    "mnli": (
        "nyu-mll/multi_nli",
        None,
        {"train": "train", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"},
        Features(
            {
                "promptID": I32,
                "pairID": S,
                "premise": S,
                "premise_binary_parse": S,
                "premise_parse": S,
                "hypothesis": S,
                "hypothesis_binary_parse": S,
                "hypothesis_parse": S,
                "genre": S,
                "label": ClassLabel(names=NLI3),
            }
        ),
    ),
    "snli": (
        "stanfordnlp/snli",
        None,
        {"train": "train", "dev": "validation", "test": "test"},
        Features({"premise": S, "hypothesis": S, "label": ClassLabel(names=NLI3)}),
    ),
    "tnews": (
        "clue/clue",
        "tnews",
        {"clue_train": "train", "clue_dev": "validation", "clue_test": "test"},
        Features({"sentence": S, "label": ClassLabel(names=TNEWS), "idx": I32}),
    ),
    "ocnli": (
        "clue/clue",
        "ocnli",
        {"clue_train": "train", "clue_dev": "validation", "clue_test": "test"},
        Features(
            {
                "sentence1": S,
                "sentence2": S,
                "label": ClassLabel(names=["neutral", "entailment", "contradiction"]),
                "idx": I32,
            }
        ),
    ),
}
ALL_TASKS: dict[str, TaskInfo] = {**TASKS, **FEWCLUE_TASKS}


def to_hub(task: str, split: str, raws: list[dict[str, Any]]) -> dict[str, list]:
    """Raw local-file records -> the hub's columns for the same examples (as its loader builds them)."""
    info, names = ALL_TASKS[task], HUB_SCHEMA[task][3]["label"]
    labeled = split not in info.unlabeled_splits
    out: list[dict[str, Any]] = []
    for n, raw in enumerate(raws):
        label = raw.get("label")
        if isinstance(names, ClassLabel) and task == "sst2":  # the TSV holds the class index itself
            label = int(label) if labeled else -1
        elif isinstance(names, ClassLabel):
            label = names.names.index(str(label)) if labeled and str(label) in names.names else -1
        if task == "sst2":
            row = {"sentence": raw["sentence"], "label": label, "idx": int(raw.get("index", n))}
        elif task == "ag_news":
            row = {"label": int(label), "title": raw["title"], "description": raw["description"]}
        elif task in ("rte", "cb", "boolq"):
            row = {k: raw[k] for k in info.fields} | {"idx": raw["idx"], "label": label}
        elif task == "mnli":
            parses = dict.fromkeys(["premise_binary_parse", "premise_parse", "hypothesis_binary_parse"], "( x )")
            row = {"premise": raw["premise"], "hypothesis": raw["hypothesis"], "label": label}
            row |= parses | {"hypothesis_parse": "(ROOT x)", "promptID": n, "pairID": f"{n}e", "genre": "fiction"}
        elif task == "snli":
            row = {"premise": raw["premise"], "hypothesis": raw["hypothesis"], "label": label}
        elif task == "tnews":
            row = {"sentence": raw["sentence"], "label": label, "idx": n}
        else:  # ocnli: CLUE's loader skips rows whose label is '-'
            if labeled and label == -1:
                continue
            row = {"sentence1": raw["sentence1"], "sentence2": raw["sentence2"], "label": label, "idx": len(out)}
        out.append(row)
    columns = list(HUB_SCHEMA[task][3])
    return {c: [r[c] for r in out] for c in columns}


def save_hub(mirror: Path, task: str, splits: dict[str, list[dict[str, Any]]]) -> None:
    """Write a hub-schema DatasetDict for ``task`` (promptkit split -> raw records) into ``mirror``."""
    dataset_id, config, hub_splits, features = HUB_SCHEMA[task]
    folder = mirror / dataset_id / (config or "default")
    parts = {hub_splits[s]: Dataset.from_dict(to_hub(task, s, raws), features=features) for s, raws in splits.items()}
    DatasetDict(parts).save_to_disk(str(folder))


def write_local(root: Path, info: TaskInfo, split: str, raws: list[dict[str, Any]]) -> Path:
    """Write raw records in the task's local file format (TSV, header-less CSV or JSON Lines)."""
    path = root / info.splits[split]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tsv":
        header = list(raws[0])
        lines = ["\t".join(header)] + ["\t".join(str(r[h]) for h in header) for r in raws]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif path.suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerows([r["label"], r["title"], r["description"]] for r in raws)
        path.write_text(buffer.getvalue(), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in raws), encoding="utf-8")
    return path


# Raw records as they stand in the local files, with the awkward cases of each format.
RAW: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("sst2", "dev"): [
        {"sentence": "it 's a charming and often affecting journey . ", "label": "1"},
        {"sentence": "unflinchingly bleak and desperate ", "label": "0"},
    ],
    ("sst2", "test"): [
        {"index": "0", "sentence": "uneasy mishmash of styles and genres ."},
        {"index": "1", "sentence": "a poor -- if durable -- imitation ."},
    ],
    ("ag_news", "test"): [
        {
            "label": "3",
            "title": "Fears for T N pension",
            "description": "Unions at Turner   Newall say they are 'disappointed'.",
        },
        {
            "label": "4",
            "title": "Prize (SPACE.com)",
            "description": "A second\\team competing for the  #36;10 million\\prize.",
        },
        {
            "label": "2",
            "title": "Japan #39;s AT amp;T \\$5 deal",
            "description": "&lt;b&gt;Bold&lt;/b&gt; quot;move quot;\\\\next",
        },
        {"label": "1", "title": " Leading space", "description": "trailing space "},
    ],
    ("rte", "val"): [
        {
            "premise": "Dana Reeve died.",
            "hypothesis": "Christopher Reeve had an accident.",
            "label": "not_entailment",
            "idx": 0,
        },
        {
            "premise": "Yet, we now are discovering.",
            "hypothesis": "Bacteria is winning.",
            "label": "entailment",
            "idx": 1,
        },
    ],
    ("rte", "test"): [{"premise": "Mangla was built.", "hypothesis": "Mangla is a dam.", "idx": 0}],
    ("cb", "val"): [
        {"premise": "Valence the void-brain.", "hypothesis": "Valence was helping", "label": "contradiction", "idx": 0},
        {"premise": "I didn't know.", "hypothesis": "he was there", "label": "neutral", "idx": 1},
        {"premise": "She said it.", "hypothesis": "it was true", "label": "entailment", "idx": 2},
    ],
    ("boolq", "val"): [
        {
            "question": "does ethanol take more energy",
            "passage": "Ethanol fuel -- All biomass.",
            "idx": 0,
            "label": False,
        },
        {"question": "is house tax and property tax same", "passage": "Property tax -- x.", "idx": 1, "label": True},
    ],
    ("mnli", "dev_matched"): [
        {"premise": "The new rights are nice enough", "hypothesis": "Everyone really likes them.", "label": "neutral"},
        {"premise": "This site includes a list.", "hypothesis": "The site has a list.", "label": "entailment"},
        {"premise": "uh i don't know", "hypothesis": "I know.", "label": "contradiction"},
    ],
    ("snli", "dev"): [
        {"premise": "Two women are embracing.", "hypothesis": "Two woman are holding packages.", "label": "entailment"},
        {"premise": "A man sleeps.", "hypothesis": "A man is awake.", "label": "-"},
        {"premise": "Children smiling.", "hypothesis": "They are frowning.", "label": "contradiction"},
    ],
    ("tnews", "clue_dev"): [
        {"label": "102", "label_desc": "news_entertainment", "sentence": "江疏影甜甜圈自拍 ", "keywords": "江疏影"},
        {"label": "110", "label_desc": "news_military", "sentence": "以色列大规模空袭", "keywords": ""},
    ],
    ("ocnli", "clue_dev"): [
        {"sentence1": "身上裹一件旧毯子", "sentence2": "身上裹着一件毯子", "label": "entailment", "id": 0},
        {"sentence1": "那就要拿一些成果.", "sentence2": "这件事必须落到实处", "label": "-", "id": 1},
        {"sentence1": "可是你好多是给别人打的呀.", "sentence2": "你没给我打过", "label": "neutral", "id": 2},
    ],
}


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $PROMPTKIT_DATA, no shared/data above cwd or the package, an empty cache, hub offline."""
    for name in (ENV_VAR, MIRROR_ENV, "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(tasks, "__file__", str(tmp_path / "site" / "promptkit" / "tasks.py"))
    return tmp_path


def same_rows(got: list[dict], expected: list[dict]) -> None:
    """Equal rows, label types included (True == 1 in Python, not in JSON)."""
    assert got == expected
    assert json.dumps(got, ensure_ascii=False) == json.dumps(expected, ensure_ascii=False)


# --- the hub: every task's rows equal the local reader's -----------------------------------------


@pytest.mark.parametrize(("task", "split"), sorted(RAW))
def test_hub_rows_equal_local_rows(task: str, split: str, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = ALL_TASKS[task]
    write_local(isolated / "local", info, split, RAW[task, split])
    expected = load_task(info, split, root=isolated / "local")
    assert expected, "the local reader gave no rows"
    save_hub(isolated / "mirror", task, {split: RAW[task, split]})
    monkeypatch.setenv(MIRROR_ENV, str(isolated / "mirror"))
    assert where(info, split).kind == "hub"
    same_rows(load_task(info, split), expected)
    assert where(info, split).kind == "hub-cache"


def test_ag_news_cleaning_and_snli_dropping_on_the_hub(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_hub(isolated / "mirror", "ag_news", {"test": RAW["ag_news", "test"]})
    save_hub(isolated / "mirror", "snli", {"dev": RAW["snli", "dev"]})
    monkeypatch.setenv(MIRROR_ENV, str(isolated / "mirror"))
    news = load_task("ag_news", "test")
    assert news[1]["description"] == "A second team competing for the $10 million prize."
    assert news[2]["title"] == "Japan's AT&T $5 deal"
    assert news[2]["description"].startswith("<b>Bold</b>") and news[2]["description"].endswith('"move" next')
    assert [r["label"] for r in load_task("snli", "dev")] == ["entailment", "contradiction"]


def test_real_data_rows_equal_hub_rows(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first 25 real records of every local split the hub also has, through both paths."""
    monkeypatch.setattr(tasks, "__file__", str(REPO / "promptkit" / "tasks.py"))
    shared = shared_root()
    if shared is None:
        pytest.skip("no shared/data folder: the real benchmark files are not here")
    monkeypatch.setattr(tasks, "__file__", str(isolated / "site" / "promptkit" / "tasks.py"))
    checked = []
    for name, info in TASKS.items():
        splits = {}
        for split in HUB[name].splits:
            path = shared / info.splits[split]
            if path.is_file():
                splits[split] = list(itertools.islice(tasks._read_rows(path), 25))  # raw records
                checked.append((name, split))
        if splits:
            save_hub(isolated / "mirror", name, splits)
    monkeypatch.setenv(MIRROR_ENV, str(isolated / "mirror"))
    for name, split in checked:
        expected = load_task(name, split, root=shared, limit=25)
        same_rows(load_task(name, split, limit=len(expected)), expected)
    # FewCLUE's few-shot splits are not on the hub, and CLUE's full splits (the hub's) are not here.
    assert {n for n, _ in checked} == set(TASKS) - set(FEWCLUE_TASKS)


def test_changed_hub_schema_is_refused() -> None:
    swapped = Features({"sentence": S, "label": ClassLabel(names=["positive", "negative"]), "idx": I32})
    with pytest.raises(DataError, match=r"class names \['positive', 'negative'\], expected \['negative', 'positive'\]"):
        check_features(HUB["sst2"], "dev", swapped)
    with pytest.raises(DataError, match=r"has no column 'title' \(columns: \['label', 'text'\]\)"):
        check_features(HUB["ag_news"], "test", Features({"label": I64, "text": S}))
    as_classes = Features({"label": ClassLabel(names=["World", "Sports", "Business", "Sci/Tech"]), "title": S})
    with pytest.raises(DataError, match="ClassLabel"):
        check_features(HUB["ag_news"], "test", as_classes | {"description": S})


# --- the cache --------------------------------------------------------------------------------


def test_hub_download_is_cached_as_plain_jsonl(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_hub(isolated / "mirror", "boolq", {"val": RAW["boolq", "val"]})
    monkeypatch.setenv(MIRROR_ENV, str(isolated / "mirror"))
    rows = load_task("boolq", "val")
    path = hub_cache_file("boolq", "val")
    assert path == isolated / "cache" / "data" / "hub" / "boolq" / "val.jsonl"
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta | {"dataset": "aps/super_glue", "config": "boolq", "hub_split": "validation", "rows": 2} == meta
    assert rows[0]["label"] is False and rows[1]["label"] is True

    monkeypatch.delenv(MIRROR_ENV)  # the hub is gone (offline): the cache serves the split
    assert where("boolq", "val").kind == "hub-cache"
    same_rows(load_task("boolq", "val"), rows)
    assert load_task("boolq", "val", limit=1) == rows[:1]


def test_damaged_cache_is_fetched_again_or_reported(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    save_hub(isolated / "mirror", "cb", {"val": RAW["cb", "val"]})
    monkeypatch.setenv(MIRROR_ENV, str(isolated / "mirror"))
    rows = load_task("cb", "val")
    path = hub_cache_file("cb", "val")
    path.write_text(path.read_text().splitlines()[0] + "\n")  # truncated: 1 row, description says 3
    with caplog.at_level(logging.WARNING):
        same_rows(load_task("cb", "val"), rows)  # fetched again from the (mirrored) hub
    assert "description says 3" in caplog.text
    assert len(path.read_text().splitlines()) == 3

    path.write_text('{"premise": "x", "hypothesis": "y", "label": "maybe"}\n' * 3)
    monkeypatch.delenv(MIRROR_ENV)
    with pytest.raises(DataUnavailableError, match="HF_HUB_OFFLINE is set"):
        load_task("cb", "val")


# --- the order of the sources -------------------------------------------------------------------


def test_sources_in_order(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$PROMPTKIT_DATA, then shared/data, then the cache folder, then a hub download, then the hub."""

    def local(root: Path, text: str) -> None:
        write_local(root, get_task("sst2"), "dev", [{"sentence": text, "label": "1"}])

    env, workspace, cache = isolated / "env", isolated / "ws", cache_root()
    local(env, "from env")
    local(workspace / "shared" / "data", "from shared")
    local(cache, "from cache")
    save_hub(isolated / "mirror", "sst2", {"dev": [{"sentence": "from hub", "label": "1"}]})
    (workspace / "repo").mkdir()
    monkeypatch.chdir(workspace / "repo")
    monkeypatch.setenv(ENV_VAR, str(env))
    monkeypatch.setenv(MIRROR_ENV, str(isolated / "mirror"))

    def first() -> tuple[str, str]:
        return where("sst2", "dev").kind, load_task("sst2", "dev")[0]["text"]

    assert first() == ("env", "from env")
    (env / "sst2" / "dev.tsv").unlink()  # a $PROMPTKIT_DATA without the split falls through
    assert first() == ("shared", "from shared")
    monkeypatch.chdir(isolated / "work")
    assert first() == ("cache", "from cache")
    (cache / "sst2" / "dev.tsv").unlink()
    assert first() == ("hub", "from hub")
    assert first() == ("hub-cache", "from hub")
    found = where("sst2", "dev")
    assert found.path == hub_cache_file("sst2", "dev") and "nyu-mll/glue" in str(found)


def test_root_argument_reads_only_that_folder(isolated: Path) -> None:
    write_local(cache_root(), get_task("sst2"), "dev", [{"sentence": "cached", "label": "0"}])
    assert load_task("sst2", "dev")[0]["text"] == "cached"
    with pytest.raises(DataError, match="not found"):
        load_task("sst2", "dev", root=isolated / "elsewhere")


# --- no source: one paragraph naming the three ways ------------------------------------------


def _paragraph(err: pytest.ExceptionInfo, hub: bool = True) -> str:
    """The message is one paragraph naming $PROMPTKIT_DATA, the `data` extra (if the hub has it) and the cache."""
    text = str(err.value)
    assert isinstance(err.value, DataError) and isinstance(err.value, ValueError | PromptkitError)
    assert "\n" not in text and "Get it one of three ways" in text
    assert f"(1) set ${ENV_VAR}" in text and "(3) put the file into the cache folder" in text
    assert ('(2) `pip install "promptkit[data]"`' in text) == hub
    return text


def test_error_without_datasets_package(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if `datasets` were not installed
    with pytest.raises(DataUnavailableError) as err:
        load_task("sst2", "dev")
    text = _paragraph(err)
    cache = isolated / "cache" / "data"
    assert "here <folder>/sst2/dev.tsv" in text
    assert f"here {cache / 'sst2' / 'dev.tsv'}" in text  # where to put the file by hand
    assert "the `datasets` package is not installed" in text
    assert "'nyu-mll/glue' (config 'sst2', split 'validation')" in text
    assert f"${ENV_VAR} is not set" in text and "there is no shared/data folder" in text


def test_error_without_network(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert where("rte", "val").kind == "hub"  # promised, not yet tried
    with pytest.raises(DataUnavailableError) as err:
        load_task("rte", "val")
    text = _paragraph(err)
    assert "cannot be reached" in text and "'aps/super_glue' (config 'rte', split 'validation')" in text
    assert not hub_cache_file("rte", "val").exists()


def test_error_for_splits_the_hub_does_not_have(isolated: Path) -> None:
    with pytest.raises(DataUnavailableError) as err:
        where("rte", "fewglue_train")
    text = _paragraph(err, hub=False)
    assert "FewGLUE's 32-example sets are not on the Hugging Face hub" in text and "timoschick/fewglue" in text
    with pytest.raises(DataUnavailableError, match=r"FewCLUE's few-shot splits \(train_0..4"):
        load_task(FEWCLUE_TASKS["tnews"], "train_3")


def test_env_var_pointing_nowhere_is_still_an_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(isolated / "missing"))
    with pytest.raises(DataError, match="is not a directory"):
        load_task("sst2", "dev")


# --- benchmark scripts: the paragraph, no traceback, non-zero exit ---------------------------------
# (test_demo.py runs benchmarks/zero_shot.py end to end, in a fresh process, from a copy elsewhere)


def test_zero_shot_without_data_exits_1_with_the_paragraph(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any run but the demo (here the demo's own command with --no-demo) stops before loading a model."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from zero_shot import main

    for argv in (["--task", "sst2", "--best", "--no-demo"], ["--task", "rte", "--limit", "2"]):
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--out", str(isolated / "results")])
        message = str(stop.value.code)  # SystemExit with a message: printed to stderr, exit status 1
        assert "Get it one of three ways" in message and "HF_HUB_OFFLINE is set" in message
        assert f"No data for {argv[1]}/" in message
    assert not (isolated / "results").exists()


def test_benchmark_helper_prints_missing_data_without_traceback(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import _common

    importlib.reload(_common)  # installs its hook over the one restored above
    assert sys.excepthook is _common._missing_data_hook
    with pytest.raises(DataUnavailableError) as err:
        load_task("cb")
    sys.excepthook(type(err.value), err.value, err.value.__traceback__)
    printed = capsys.readouterr().err
    assert printed.strip() == str(err.value) and "Traceback" not in printed
    other = KeyError("x")
    sys.excepthook(KeyError, other, None)  # anything else keeps Python's own report
    assert "KeyError" in capsys.readouterr().err
