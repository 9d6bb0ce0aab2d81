"""Plots the benchmark scripts save next to their JSON (matplotlib, from the ``benchmarks`` extra).

Without matplotlib nothing is drawn: a warning says how to install it and the script goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the file-only Agg backend, or None (with a warning) when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot (pip install 'promptkit[benchmarks]')")
        return None
    return plt


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def bars(
    ax: Any,
    names: Sequence[str],
    values: Sequence[float],
    *,
    errors: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] | None = None,
    text: Sequence[str] | None = None,
    reference: float | None = None,
    reference_label: str = "chance",
) -> None:
    """Horizontal bars, top to bottom in ``names`` order, with optional error bars, the individual
    ``points`` behind each bar (e.g. one per seed), a ``text`` label at each bar's end and a dashed
    ``reference`` line."""
    y = list(range(len(names)))
    ax.barh(y, values, xerr=errors, capsize=3, color="tab:blue", alpha=0.75, zorder=2)
    for row, row_points in enumerate(points or []):
        ax.scatter(row_points, [row] * len(row_points), color="black", s=10, zorder=3)
    ends = [v + (e if errors else 0.0) for v, e in zip(values, errors or [0.0] * len(values))]
    top = max([*ends, *(v for p in points or [] for v in p)], default=1.0)
    for row, label in enumerate(text or []):
        ax.text(top + 0.02 * top, row, label, va="center", fontsize="small")
    if reference is not None:
        ax.axvline(reference, color="gray", linestyle="--", linewidth=1, zorder=1)
        ax.text(reference, -0.6, f" {reference_label}", color="gray", fontsize="x-small", va="bottom")
    ax.set_yticks(y, labels=list(names))
    ax.set_xlim(0, top * (1.3 if text else 1.05))
    ax.set_ylim(len(names) - 0.5, -1.0)  # top to bottom in names order, room above for the reference label


def score_bars(
    path: Path,
    title: str,
    names: Sequence[str],
    values: Sequence[float],
    *,
    xlabel: str = "accuracy",
    reference: float | None = None,
) -> Path | None:
    """One bar per named result (e.g. ``template · calibration``) with its value written at the end;
    None when matplotlib is missing."""
    plt = pyplot()
    if plt is None or not names:
        return None
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.32 * len(names)))
    bars(ax, names, values, text=[f"{v:.3f}" for v in values], reference=reference)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize="medium")
    return save(fig, path)
