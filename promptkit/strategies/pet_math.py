"""The arithmetic of PET and iPET (Schick & Schütze, 2021) as pure NumPy functions.

Kept apart from the training code so each rule has an exact, hand-computed test:
how ensemble members are weighted, how their label scores merge into soft labels, how
large each iPET generation's training set is, how a label distribution is split into
integer quotas, and how pseudo-labelled examples are drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from promptkit.errors import ConfigError, DataError, check_choice

WEIGHTINGS = ("wmean", "mean")


def member_weights(accuracies: Sequence[float | None], weighting: str) -> np.ndarray:
    """Normalised ensemble weights ``[M]`` (they sum to 1).

    ``"wmean"``: proportional to each member's accuracy on the labelled set *before*
    training (PET's weighting: a prompt the pretrained model already understands counts
    more). ``"mean"``: uniform. Unknown accuracies (None: no labelled data) and an all-zero
    vector fall back to uniform weights.

    Example:
        >>> member_weights([0.5, 1.0, 0.5], "wmean").tolist()
        [0.25, 0.5, 0.25]
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    if not len(accuracies):
        raise DataError("member_weights needs at least one member")
    uniform = np.full(len(accuracies), 1.0 / len(accuracies))
    if weighting == "mean" or any(a is None for a in accuracies):
        return uniform
    acc = np.asarray(accuracies, dtype=np.float64)
    if (acc < 0).any() or not np.isfinite(acc).all():
        raise DataError(f"accuracies must be finite and >= 0, got {list(accuracies)}")
    total = acc.sum()
    return uniform if total == 0 else acc / total


def merge_log_probs(log_probs: np.ndarray, weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Soft labels ``[N, L]`` = ``softmax(sum_m w_m * log_probs[m] / sum_m w_m)`` (no temperature).

    PET averages its members' *logits*. Label log-probabilities normalised over the labels
    differ from raw logits by one constant per member and row (the log-sum-exp), so a
    weighted mean of them differs from the weighted mean of logits by one constant per row,
    and the softmax over labels -- which ignores a per-row constant -- is the same.

    Args:
        log_probs: ``[M, N, L]`` each member's label log-probabilities.
        weights: ``[M]`` non-negative member weights with a positive sum.
    """
    scores = np.asarray(log_probs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if scores.ndim != 3 or w.shape != (scores.shape[0],):
        raise DataError(f"merge_log_probs needs log_probs [M, N, L] and weights [M]; got {scores.shape}, {w.shape}")
    if (w < 0).any() or w.sum() <= 0:
        raise DataError(f"member weights must be >= 0 with a positive sum, got {w.tolist()}")
    merged = np.tensordot(w / w.sum(), scores, axes=1)  # [N, L]
    merged -= merged.max(-1, keepdims=True)
    probs = np.exp(merged)
    return probs / probs.sum(-1, keepdims=True)


def ipet_target_size(n_labeled: int, generation: int, scale_factor: int, pool_size: int) -> int:
    """How many pseudo-labelled examples the data made from ``generation`` adds.

    The next generation trains on ``n_labeled * scale_factor ** (generation + 1)`` examples
    in all: the labelled ones plus this many, capped by the unlabelled pool.

    Example:
        >>> ipet_target_size(10, 0, 5, 1000), ipet_target_size(10, 1, 5, 1000), ipet_target_size(10, 1, 5, 100)
        (40, 240, 100)
    """
    for name, value, low in (("n_labeled", n_labeled, 0), ("generation", generation, 0),
                             ("scale_factor", scale_factor, 1), ("pool_size", pool_size, 0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"ipet_target_size: {name}={value!r} is invalid: expected an int >= {low}")
    return int(min(n_labeled * scale_factor ** (generation + 1) - n_labeled, pool_size))


def label_quota(distribution: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` into ``[L]`` integer quotas that keep ``distribution`` (counts or probabilities).

    Largest-remainder rounding: every label gets ``floor(n * p_l)``, and the examples left
    over go to the largest fractional parts, ties to the lower label index. Deterministic,
    and the quotas sum to exactly ``n``.

    Example:
        >>> label_quota([1, 1, 1], 10).tolist()
        [4, 3, 3]
    """
    p = np.asarray(distribution, dtype=np.float64)
    if p.ndim != 1 or not len(p) or (p < 0).any() or p.sum() <= 0:
        raise DataError(f"label_quota needs a non-negative [L] distribution with a positive sum, got {p.tolist()}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"label_quota: n={n!r} is invalid: expected an int >= 0")
    exact = p / p.sum() * n
    quota = np.floor(exact).astype(np.int64)
    left = int(n - quota.sum())
    order = sorted(range(len(p)), key=lambda i: (-(exact[i] - quota[i]), i))
    quota[order[:left]] += 1
    return quota


def confidence_sample(
    probs: np.ndarray, quota: Sequence[int] | np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw pseudo-labelled rows: ``quota[l]`` rows per label ``l``, without replacement.

    Only rows whose most probable label is ``l`` are candidates for ``l``; each is drawn with
    probability proportional to its confidence ``probs[row, l]``. A label with fewer
    candidates than its quota gets all of them.

    Returns:
        ``(indices, labels)``: int arrays, grouped by label in label order.
    """
    probs = np.asarray(probs, dtype=np.float64)
    quota = np.asarray(quota, dtype=np.int64)
    if probs.ndim != 2 or quota.shape != (probs.shape[1],) or (quota < 0).any():
        raise DataError(f"confidence_sample needs probs [N, L] and quota [L] >= 0; got {probs.shape}, {quota}")
    best = probs.argmax(-1)
    indices, labels = [], []
    for label, want in enumerate(quota):
        rows = np.flatnonzero(best == label)
        take = min(int(want), len(rows))
        if take == 0:
            continue
        weight = probs[rows, label]
        p = weight / weight.sum() if weight.sum() > 0 else None
        indices.append(rng.choice(rows, size=take, replace=False, p=p))
        labels.append(np.full(take, label))
    if not indices:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(indices).astype(np.int64), np.concatenate(labels).astype(np.int64)


def top_confident(probs: np.ndarray, per_label: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``per_label`` most confident rows of each label (by ``probs[row, l]``, among rows whose argmax is ``l``).

    Ties keep the lower row index first. Used to start iPET without labelled data.

    Returns:
        ``(indices, labels)``: int arrays, grouped by label in label order.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise DataError(f"top_confident needs probs [N, L], got shape {probs.shape}")
    best = probs.argmax(-1)
    indices, labels = [], []
    for label in range(probs.shape[1]):
        rows = np.flatnonzero(best == label)
        rows = rows[np.argsort(-probs[rows, label], kind="stable")][:per_label]
        indices.append(rows)
        labels.append(np.full(len(rows), label))
    return np.concatenate(indices).astype(np.int64), np.concatenate(labels).astype(np.int64)
