"""Aggregates, markdown table and plot of benchmarks/few_shot.py's per-run rows.

A run's ``k`` is K examples per class, or the string ``"fewclue"`` for a run on FewCLUE's own
few-shot sets (tnews, ocnli), shown as the column "FewCLUE sets".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _plots import bars, pyplot, save

from promptkit.tasks import get_task


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


def _k_name(k: int | str) -> str:
    return f"K={k}" if isinstance(k, int) else "FewCLUE sets"


def markdown(
    aggregates: list[dict], tasks: list[str], methods: list[str], ks: list[int | str], notes: list[str]
) -> str:
    """Rows task x method, columns K: accuracy % mean ± std over seeds (CB also macro-F1), mean seconds per run."""
    by_key = {(a["task"], a["k"], a["method"]): a for a in aggregates}
    header = ["task", "method", *[_k_name(k) for k in ks]]
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


def plot(
    aggregates: list[dict],
    tasks: list[str],
    methods: list[str],
    path: Path,
    title: str,
    runs: list[dict] | None = None,
) -> Path | None:
    """One panel per task; None when matplotlib is missing.

    A task run at one K (or on FewCLUE's sets) gets horizontal bars of mean accuracy ± std over
    seeds, one dot per seed (from ``runs``) and a dashed line at chance; a task run at several K
    gets accuracy against K.
    """
    plt = pyplot()
    if plt is None:
        return None
    shown = [t for t in tasks if any(a["task"] == t for a in aggregates)] or tasks
    one_k = {t: len({a["k"] for a in aggregates if a["task"] == t}) <= 1 for t in shown}
    height = 0.45 * len(methods) + 1.8 if all(one_k.values()) else max(3.5, 0.45 * len(methods) + 1.8)
    fig, axes = plt.subplots(1, len(shown), figsize=(max(7.0, 5.5 * len(shown)), height), squeeze=False)
    for ax, task in zip(axes[0], shown):
        if one_k[task]:
            _bars_at_one_k(ax, task, [a for a in aggregates if a["task"] == task], methods, runs or [])
        else:
            _lines_against_k(ax, task, aggregates, methods)
    fig.suptitle(title)
    return save(fig, path)


def _bars_at_one_k(ax, task: str, aggregates: list[dict], methods: list[str], runs: list[dict]) -> None:
    by_method = {a["method"]: a for a in aggregates}
    names = [m for m in methods if m in by_method]
    means = [by_method[m]["accuracy_mean"] for m in names]
    stds = [by_method[m]["accuracy_std"] for m in names]
    points = [[r["accuracy"] for r in runs if r["task"] == task and r["method"] == m] for m in names]
    text = [f"{100 * mean:.1f} ± {100 * std:.1f}" if by_method[m]["n_seeds"] > 1 else f"{100 * mean:.1f} (1 seed)"
            for m, mean, std in zip(names, means, stds)]  # fmt: skip
    n_labels = len(get_task(task).labels)
    bars(ax, names, means, errors=stds, points=points, text=text, reference=1 / n_labels,
         reference_label=f"chance (1/{n_labels})")  # fmt: skip
    k = aggregates[0]["k"] if aggregates else "?"
    seeds = max((a["n_seeds"] for a in aggregates), default=0)
    ax.set_title(f"{task}, K={k} per class" if isinstance(k, int) else f"{task}, FewCLUE's train_i / dev_i")
    ax.set_xlabel(f"accuracy (mean ± std over {seeds} seed(s); dots: seeds)")


def _lines_against_k(ax, task: str, aggregates: list[dict], methods: list[str]) -> None:
    for method in methods:
        points = sorted((a["k"], a["accuracy_mean"], a["accuracy_std"]) for a in aggregates
                        if a["task"] == task and a["method"] == method)  # fmt: skip
        if points:
            k, mean, std = zip(*points)
            ax.errorbar(k, mean, yerr=std, marker="o", capsize=3, label=method)
    ks = sorted({a["k"] for a in aggregates if a["task"] == task})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, labels=[str(k) for k in ks])
    ax.set_title(task)
    ax.set_xlabel("K (examples per class)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
