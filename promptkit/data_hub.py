"""Where each task lives on the Hugging Face hub, and how hub rows become promptkit rows.

One :class:`HubSource` per task names the dataset id and config, which hub split each
promptkit split is, which hub column each text field is, and how the hub encodes labels.
:func:`convert` turns hub rows into exactly the rows the local readers of
:mod:`promptkit.tasks` give for the same examples: the hub's columns are renamed to the
local file's columns and the row goes through the same normalisation (stripping, AG News
cleaning, label checks, dropped no-consensus rows). A ``ClassLabel`` column is checked
against the names expected here, so a re-ordered label encoding on the hub is an error,
never silently swapped labels.

Ids and schemas (checked against the dataset cards and loading scripts):

- ``nyu-mll/glue`` ``sst2``: ``sentence``, ``label`` (``negative``, ``positive``), ``idx``;
  the test split's labels are -1 and its ``idx`` is GLUE's ``index`` column.
- ``sh0416/ag_news``: ``label`` (1-4, as in the CSV), ``title``, ``description``. The
  canonical ``fancyzhx/ag_news`` joins title and description into one ``text`` column,
  which cannot give back the two fields the AG News templates use.
- ``aps/super_glue`` ``rte`` / ``cb`` / ``boolq``: ``premise``/``hypothesis`` or
  ``question``/``passage``, ``idx``, ``label`` (``entailment``, ``not_entailment`` /
  ``entailment``, ``contradiction``, ``neutral`` / ``False``, ``True``). FewGLUE's 32-example
  sets are not on the hub.
- ``nyu-mll/multi_nli``: ``premise``, ``hypothesis``, ``label`` (``entailment``,
  ``neutral``, ``contradiction``), splits ``train``, ``validation_matched``,
  ``validation_mismatched``.
- ``stanfordnlp/snli``: ``premise``, ``hypothesis``, ``label`` (``entailment``,
  ``neutral``, ``contradiction``; -1 where annotators did not agree: dropped, as locally).
- ``clue/clue`` ``tnews``: ``sentence``, ``label`` (``100`` ... ``116`` without 105 and 111),
  ``idx``; ``ocnli``: ``sentence1``, ``sentence2``, ``label`` (``neutral``, ``entailment``,
  ``contradiction``), ``idx``. These are CLUE's full splits; FewCLUE's few-shot splits are
  not on the hub.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from promptkit.errors import DataError
from promptkit.tasks import TaskInfo, _normalise

_SG_SPLITS = {"train": "train", "val": "validation", "test": "test"}
_FEWGLUE = (
    "FewGLUE's 32-example sets are not on the Hugging Face hub; take train.jsonl from "
    "github.com/timoschick/fewglue (FewGLUE/{T}/) and dev32.jsonl from github.com/THUDM/P-tuning "
    "(FewGLUE_32dev/{T}/)"
)
_FEWCLUE = (
    "FewCLUE's few-shot splits (train_0..4, dev_0..4, *_few_all, test_public, test, unlabeled) are "
    "not on the Hugging Face hub, which has CLUE's full splits (clue_train, clue_dev, clue_test); "
    "take the files from github.com/CLUEbenchmark/FewCLUE (datasets/{t}/)"
)
_NLI3 = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class HubSource:
    """One task's copy on the Hugging Face hub.

    Attributes:
        dataset: hub dataset id, e.g. ``"nyu-mll/glue"``.
        config: config (subset) name, or None for a dataset with one config.
        splits: promptkit split -> hub split.
        columns: promptkit field -> hub column.
        class_names: the hub ``label`` column's ``ClassLabel`` names in index order, or None
            when the column holds promptkit's own label values (e.g. AG News 1-4).
        labels: the promptkit label of each class index (with ``class_names``).
        idx_splits: promptkit splits whose local files carry an ``idx`` (copied from the hub).
        missing: promptkit split -> why the hub has no copy of it (said in the error).
    """

    dataset: str
    config: str | None
    splits: Mapping[str, str]
    columns: Mapping[str, str]
    class_names: tuple[str, ...] | None = None
    labels: tuple | None = None
    idx_splits: frozenset[str] = frozenset()
    missing: Mapping[str, str] = field(default_factory=dict)

    def describe(self, split: str) -> str:
        """``'nyu-mll/glue' (config 'sst2', split 'validation')``."""
        config = f"config {self.config!r}, " if self.config else ""
        return f"{self.dataset!r} ({config}split {self.splits[split]!r})"


def _superglue(task: str, columns: tuple[str, str], names: tuple[str, ...], labels: tuple, splits: dict) -> HubSource:
    upper = task.upper() if task != "boolq" else "BoolQ"
    why = _FEWGLUE.replace("{T}", upper)
    return HubSource(
        "aps/super_glue",
        task,
        splits,
        {c: c for c in columns},
        names,
        labels,
        frozenset(splits),
        {"fewglue_train": why, "fewglue_dev32": why},
    )


def _clue(task: str, columns: Mapping[str, str], names: tuple[str, ...], labels: tuple) -> HubSource:
    few = [f"{k}_{i}" for k in ("train", "dev") for i in range(5)]
    few += ["train_few_all", "dev_few_all", "test_public", "test", "unlabeled"]
    why = _FEWCLUE.replace("{t}", task)
    splits = {"clue_train": "train", "clue_dev": "validation", "clue_test": "test"}
    return HubSource("clue/clue", task, splits, columns, names, labels, missing=dict.fromkeys(few, why))


_TNEWS_NAMES = ("100", "101", "102", "103", "104", "106", "107", "108", "109", "110", "112", "113", "114", "115", "116")

HUB: dict[str, HubSource] = {
    "sst2": HubSource(
        "nyu-mll/glue",
        "sst2",
        {"train": "train", "dev": "validation", "test": "test"},
        {"text": "sentence"},
        ("negative", "positive"),
        (0, 1),
        frozenset({"test"}),
    ),
    "ag_news": HubSource(
        "sh0416/ag_news", None, {"train": "train", "test": "test"}, {"title": "title", "description": "description"}
    ),
    "rte": _superglue(
        "rte", ("premise", "hypothesis"), ("entailment", "not_entailment"), ("entailment", "not_entailment"), _SG_SPLITS
    ),
    "cb": _superglue(
        "cb",
        ("premise", "hypothesis"),
        ("entailment", "contradiction", "neutral"),
        ("entailment", "contradiction", "neutral"),
        _SG_SPLITS,
    ),
    "boolq": _superglue(
        "boolq", ("passage", "question"), ("False", "True"), (False, True), {"train": "train", "val": "validation"}
    ),
    "mnli": HubSource(
        "nyu-mll/multi_nli",
        None,
        {"train": "train", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"},
        {"premise": "premise", "hypothesis": "hypothesis"},
        _NLI3,
        _NLI3,
    ),
    "snli": HubSource(
        "stanfordnlp/snli",
        None,
        {"train": "train", "dev": "validation", "test": "test"},
        {"premise": "premise", "hypothesis": "hypothesis"},
        _NLI3,
        _NLI3,
    ),
    "tnews": _clue("tnews", {"text": "sentence"}, _TNEWS_NAMES, tuple(int(n) for n in _TNEWS_NAMES)),
    "ocnli": _clue(
        "ocnli",
        {"premise": "sentence1", "hypothesis": "sentence2"},
        ("neutral", "entailment", "contradiction"),
        ("neutral", "entailment", "contradiction"),
    ),
}


def hub_source(task: str) -> HubSource | None:
    """The task's :class:`HubSource`, or None if promptkit knows no hub copy of it.

    Example:
        >>> hub_source("sst2").dataset
        'nyu-mll/glue'
    """
    return HUB.get(task)


def check_features(source: HubSource, split: str, features: Mapping[str, Any] | None) -> None:
    """Refuse a hub dataset whose columns or label encoding differ from ``source``.

    ``features`` is a ``datasets.Features`` (or any mapping of column -> feature); a
    ``ClassLabel`` is recognised by its ``names``.
    """
    if features is None:
        return
    where = f"Hugging Face dataset {source.describe(split)}"
    wanted = [*source.columns.values(), "label"]
    absent = [c for c in wanted if c not in features]
    if absent:
        raise DataError(
            f"{where} has no column {absent[0]!r} (columns: {sorted(features)}); promptkit expects "
            f"{wanted}. The hub copy changed: put the files in the cache folder by hand (see promptkit.data)."
        )
    names = getattr(features["label"], "names", None)
    if source.class_names is not None and list(names or []) != list(source.class_names):
        raise DataError(
            f"{where}: column 'label' has class names {names}, expected {list(source.class_names)}; "
            "refusing to guess which label is which. Put the files in the cache folder by hand (see promptkit.data)."
        )
    if source.class_names is None and names is not None:
        raise DataError(
            f"{where}: column 'label' is a ClassLabel {list(names)}, expected the task's own label values; "
            "refusing to guess which label is which."
        )


def convert(task: TaskInfo, split: str, rows: Iterable[Mapping[str, Any]], source: HubSource) -> tuple[list[dict], int]:
    """Hub rows -> promptkit rows of ``task``/``split`` (as the local reader gives them).

    Returns the rows and the number dropped (no-consensus labels of tasks that drop them).

    Example:
        >>> from promptkit.tasks import get_task
        >>> convert(get_task("sst2"), "dev", [{"sentence": "fun ", "label": 1, "idx": 0}], HUB["sst2"])
        ([{'text': 'fun', 'label': 1}], 0)
    """
    labeled = split not in task.unlabeled_splits
    keep_idx = split in source.idx_splits
    kept: list[dict] = []
    dropped = 0
    for number, hub_row in enumerate(rows):
        raw: dict[str, Any] = {name: hub_row.get(column) for name, column in source.columns.items()}
        label = hub_row.get("label")
        if source.class_names is not None and isinstance(label, int) and not isinstance(label, bool):
            label = source.labels[label] if 0 <= label < len(source.labels) else None
        raw["label"] = label
        if keep_idx:
            raw["idx"] = hub_row["idx"]
        row = _normalise(raw, task, labeled, f"{source.describe(split)} row {number}")
        if row is None:
            dropped += 1
        else:
            kept.append(row)
    return kept, dropped
