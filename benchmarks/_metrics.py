"""Classification scores of the benchmarks, all from ``sklearn.metrics``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_scores(targets: Sequence[Any], predicted: Sequence[Any], labels: Sequence[Any]) -> dict[str, Any]:
    """Accuracy, macro-F1 over ``labels`` and the confusion matrix (rows: true label, columns: predicted,
    both in ``labels`` order) as JSON-ready values.

    Macro-F1 averages over every label in ``labels``, so a label that is never predicted counts as an F1
    of 0 rather than being left out.

    Example:
        >>> classification_scores([0, 1, 1], [0, 1, 0], labels=[0, 1])["confusion_matrix"]
        [[1, 0], [1, 1]]
    """
    labels = list(labels)
    return {
        "accuracy": float(accuracy_score(targets, predicted)),
        "macro_f1": float(f1_score(targets, predicted, labels=labels, average="macro", zero_division=0.0)),
        "confusion_matrix": confusion_matrix(targets, predicted, labels=labels).tolist(),
    }


def accuracy(targets: Sequence[Any], predicted: Sequence[Any]) -> float:
    """Fraction of ``predicted`` equal to ``targets`` (``sklearn.metrics.accuracy_score``)."""
    return float(accuracy_score(targets, predicted))
