"""Example handling: coerce user data to row dicts, draw K examples per class, map labels to indices.

Rows are plain dicts of field -> value. Every model and strategy takes a dict, a list of
dicts, a pandas DataFrame or a Hugging Face ``datasets.Dataset`` and turns it into rows
with :func:`as_examples`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from promptkit.errors import DataError, PromptkitError, closest
from promptkit.verbalizer import Verbalizer


def sample_k_shot(
    examples: Any, k: int, *, seed: int, label_key: str = "label", allow_fewer: bool = False
) -> list[dict[str, Any]]:
    """Draw ``k`` examples per class, deterministically for ``seed``, in shuffled order.

    Classes are visited in sorted order (first-seen order if labels don't sort); one
    ``random.Random(seed)`` picks each class's rows and then shuffles the result.

    Example:
        >>> rows = [{"text": str(i), "label": i % 2} for i in range(10)]
        >>> len(sample_k_shot(rows, 2, seed=0))
        4
    """
    rows = as_examples(examples)
    for i, row in enumerate(rows):
        if label_key not in row:
            close = closest(label_key, [str(key) for key in row])
            hint = f" Did you mean label_key={close!r}?" if close is not None else ""
            raise DataError(f"Example {i} has no {label_key!r} key; its keys: {list(row)}.{hint}")
        if row[label_key] is None:
            raise DataError(f"Example {i} has label None (unlabeled split?); k-shot needs labels.")
    return draw_per_class(rows, lambda row: row[label_key], k, seed=seed, allow_fewer=allow_fewer)


def draw_per_class(
    rows: Sequence[Mapping[str, Any]],
    class_of: Callable[[Mapping[str, Any]], Hashable],
    k: int,
    *,
    seed: int,
    allow_fewer: bool = False,
) -> list[dict[str, Any]]:
    """``k`` copies of rows per class (``class_of(row)``), drawn with ``seed``, shuffled together."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DataError(f"k must be a positive int, got {k!r}.")
    by_class: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_class.setdefault(class_of(row), []).append(row)
    try:
        classes = sorted(by_class)
    except TypeError:
        classes = list(by_class)
    rng = random.Random(seed)
    picked: list[dict[str, Any]] = []
    for label in classes:
        pool = by_class[label]
        if len(pool) < k and not allow_fewer:
            raise DataError(
                f"Class {label!r} has only {len(pool)} examples, fewer than k={k}; "
                "pass allow_fewer=True to take all of them."
            )
        picked.extend(dict(row) for row in rng.sample(pool, min(k, len(pool))))
    rng.shuffle(picked)
    return picked


def _py(value: Any) -> Any:
    """Convert numpy scalars to Python scalars and pandas missing values to None."""
    if type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return None if isinstance(value, float) and math.isnan(value) else value


def as_examples(data: Any) -> list[dict[str, Any]]:
    """Coerce a dict, list of dicts, pandas DataFrame or ``datasets.Dataset`` to row dicts.

    Example:
        >>> as_examples({"text": "great", "label": 1})
        [{'text': 'great', 'label': 1}]
    """
    module, kind = type(data).__module__, type(data).__name__
    if isinstance(data, (str, bytes)):
        raise DataError(f"got a {kind}; pass a dict like {{'text': ...}} or a list of them.")
    if module.startswith("datasets") and kind.endswith("DatasetDict"):
        raise DataError(f"got a {kind} with splits {list(data.keys())}; did you mean data['train']?")
    if module.startswith("datasets"):
        return [dict(row) for row in data]
    if module.startswith("pandas") and hasattr(data, "to_dict"):
        records = data.to_dict("records") if hasattr(data, "columns") else [data.to_dict()]
        return [{str(key): _py(val) for key, val in rec.items()} for rec in records]
    if isinstance(data, Mapping):
        return [dict(data)]
    if isinstance(data, (list, tuple)):
        for i, row in enumerate(data):
            if not isinstance(row, Mapping):
                raise DataError(
                    f"Item {i} is a {type(row).__name__}, not a dict; every example must be a dict of field -> value."
                )
        return [dict(row) for row in data]
    raise DataError(
        f"Unsupported data type {module}.{kind}; pass a dict, a list of dicts, "
        "a pandas DataFrame or a datasets.Dataset."
    )


def labels_of(rows: Sequence[Mapping[str, Any]], verbalizer: Verbalizer, label_key: str = "label") -> list[int]:
    """Class indices of labelled rows; an unknown or missing label names its row."""
    targets = []
    for row, example in enumerate(rows):
        if label_key not in example:
            raise DataError(f"row {row} has no {label_key!r} field; its keys are {sorted(example)}")
        try:
            targets.append(verbalizer.index(example[label_key]))
        except PromptkitError as err:
            raise type(err)(f"row {row}: {err}") from None
    return targets


def target_distributions(
    rows: Sequence[Mapping[str, Any]], targets: Any, verbalizer: Verbalizer, label_key: str = "label"
) -> torch.Tensor:
    """``[N, n_labels]`` training targets: one-hot rows' labels, or ``targets`` (one label per row, or soft
    distributions ``[N, n_labels]`` in ``verbalizer.labels`` order, checked to be distributions)."""
    n_labels = len(verbalizer.labels)
    if targets is None:
        index = labels_of(rows, verbalizer, label_key)
    elif (targets.ndim if hasattr(targets, "ndim") else np.ndim(targets)) == 2:
        soft = torch.as_tensor(np.asarray(targets, dtype=np.float32))
        if tuple(soft.shape) != (len(rows), n_labels):
            raise DataError(f"soft targets must be [N, n_labels] = [{len(rows)}, {n_labels}], got {list(soft.shape)}")
        sums = soft.sum(-1)
        if (soft < 0).any() or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            raise DataError(f"each soft target row must be a distribution (>= 0, sums to 1); row sums: {sums.tolist()}")
        return soft
    else:
        if len(targets) != len(rows):
            raise DataError(f"got {len(targets)} targets for {len(rows)} examples; pass one per example")
        index = labels_of([{label_key: t} for t in targets], verbalizer, label_key)
    return torch.nn.functional.one_hot(torch.tensor(index, dtype=torch.long), n_labels).float()
