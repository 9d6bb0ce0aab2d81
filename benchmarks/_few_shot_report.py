"""Aggregates, markdown table and plot of benchmarks/few_shot.py's per-run rows."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def _std(values: list[float]) -> float:
    """Sample standard deviation over seeds (ddof=1); 0 for a single seed."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds of accuracy, macro-F1 and seconds, per (task, K, method)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["k"], row["method"]), []).append(row)
    out = []
    for (task, k, method), runs in groups.items():
        accuracy = [r["accuracy"] for r in runs]
        f1 = [r["macro_f1"] for r in runs]
        out.append(
            {
                "task": task,
                "k": k,
                "method": method,
                "n_seeds": len(runs),
                "accuracy_mean": float(np.mean(accuracy)),
                "accuracy_std": _std(accuracy),
                "macro_f1_mean": float(np.mean(f1)),
                "macro_f1_std": _std(f1),
                "seconds_mean": float(np.mean([r["seconds"] for r in runs])),
            }
        )
    return out


def _cell(agg: dict, with_f1: bool) -> str:
    """``mean ± std`` over seeds; a single seed has no spread and says so instead."""

    spread = agg["n_seeds"] > 1

    def value(name: str) -> str:
        mean = f"{100 * agg[f'{name}_mean']:.1f}"
        return f"{mean} ± {100 * agg[f'{name}_std']:.1f}" if spread else mean

    text = value("accuracy") + (f" (F1 {value('macro_f1')})" if with_f1 else "")
    return f"{text}{'' if spread else ' (1 seed)'} · {agg['seconds_mean']:.0f} s"


def markdown(aggregates: list[dict], tasks: list[str], methods: list[str], ks: list[int], notes: list[str]) -> str:
    """Rows task x method, columns K: accuracy % mean ± std over seeds (CB also macro-F1), mean seconds per run."""
    by_key = {(a["task"], a["k"], a["method"]): a for a in aggregates}
    header = ["task", "method", *[f"K={k}" for k in ks]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in tasks:
        for method in methods:
            cells = [by_key.get((task, k, method)) for k in ks]
            if not any(cells):
                continue
            text = [_cell(c, with_f1=task == "cb") if c else "" for c in cells]
            lines.append("| " + " | ".join([task, method, *text]) + " |")
    legend = "Accuracy % mean ± sample std over seeds (CB: also macro-F1) · mean wall seconds per run."
    return "\n".join([legend, "", *lines, "", *[f"- {note}" for note in notes]])


def plot(aggregates: list[dict], tasks: list[str], methods: list[str], path: Path, title: str) -> Path | None:
    """Accuracy against K (mean ± std over seeds), one panel per task; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot (pip install 'promptkit[benchmarks]')")
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method in methods:
            points = sorted((a["k"], a["accuracy_mean"], a["accuracy_std"]) for a in aggregates
                            if a["task"] == task and a["method"] == method)  # fmt: skip
            if points:
                k, mean, std = zip(*points)
                ax.errorbar(k, mean, yerr=std, marker="o", capsize=3, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(
            sorted({a["k"] for a in aggregates}), labels=[str(k) for k in sorted({a["k"] for a in aggregates})]
        )
        ax.set_title(task)
        ax.set_xlabel("K (examples per class)")
        ax.set_ylabel("accuracy")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
