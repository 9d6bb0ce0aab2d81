"""Aggregates, markdown table, plot and --merge bookkeeping of benchmarks/pet.py's per-run rows."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)
_warned: list[bool] = []  # the missing-matplotlib message, once per process
STD = "sample standard deviation over seeds (ddof=1); 0 for one seed"


def digest(value: object, length: int = 10) -> str:
    """A short stable hash of a JSON-ready value (settings, row positions)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def outcomes(row: dict) -> dict[str, float]:
    """A run's accuracies by the name shown in the table: ``method``, or ``method (variant)`` for each variant."""
    if row.get("variants"):
        return {f"{row['method']} ({name})": value for name, value in row["variants"].items()}
    return {row["method"]: row["accuracy"]}


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds of accuracy, mean wall seconds and largest peak RSS, per (task, |T|, shown method);
    for PET/iPET also the mean accuracy of the ensemble on the unlabelled pool (runs that measured it).

    Failed runs (``error``) are left out and counted in ``n_failed``.
    """
    groups: dict[tuple, list[tuple[float, dict]]] = {}
    failed: dict[tuple, int] = {}
    for row in rows:
        if row.get("error"):
            key = (row["task"], row["size"], row["method"])
            failed[key] = failed.get(key, 0) + 1
            continue
        for shown, accuracy in outcomes(row).items():
            groups.setdefault((row["task"], row["size"], shown, row["method"]), []).append((accuracy, row))
    out = []
    for (task, size, shown, method), runs in groups.items():
        accuracy = [a for a, _ in runs]
        pool = [r["pool_ensemble_accuracy"] for _, r in runs if r.get("pool_ensemble_accuracy") is not None]
        out.append(
            {
                "task": task,
                "size": size,
                "method": shown,
                "n_seeds": len(runs),
                "n_failed": failed.get((task, size, method), 0),
                "accuracy_mean": float(np.mean(accuracy)),
                "accuracy_std": _std(accuracy),
                "seconds_mean": float(np.mean([r["seconds"] for _, r in runs])),
                "peak_rss_mib": float(max(r["peak_rss_mib"] for _, r in runs)),
                "pool_ensemble_mean": float(np.mean(pool)) if pool else None,
                "pool_ensemble_seeds": len(pool),
            }
        )
    for (task, size, method), n in failed.items():  # a method whose every seed failed still gets a line
        if not any(a["task"] == task and a["size"] == size and a["method"].split(" (")[0] == method for a in out):
            out.append({"task": task, "size": size, "method": method, "n_seeds": 0, "n_failed": n})
    return out


def markdown(aggregates: list[dict], settings_lines: list[str], notes: list[str]) -> str:
    """One line per (task, |T|, method): accuracy % mean ± std, seeds, wall seconds per run, peak RSS MiB."""
    header = ["task", "\\|T\\|", "method", "accuracy % (mean ± std)", "seeds", "wall s / run", "peak RSS MiB",
              "ensemble on pool %"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for agg in aggregates:
        failed = f" ({agg['n_failed']} failed)" if agg["n_failed"] else ""
        if not agg["n_seeds"]:
            cells = ["failed", f"0{failed}", "", "", ""]
        else:
            accuracy = f"{100 * agg['accuracy_mean']:.1f}"
            if agg["n_seeds"] > 1:
                accuracy += f" ± {100 * agg['accuracy_std']:.1f}"
            cells = [accuracy, f"{agg['n_seeds']}{failed}", f"{agg['seconds_mean']:.0f}", f"{agg['peak_rss_mib']:.0f}",
                     _pool_cell(agg)]  # fmt: skip
        lines.append("| " + " | ".join([agg["task"], str(agg["size"]), agg["method"], *cells]) + " |")
    legend = (
        "Accuracy % mean ± sample std over seeds · mean wall seconds per run · peak RSS: the process's "
        "peak resident memory so far when the run ended (ru_maxrss), so it never decreases along the grid. "
        "Ensemble on pool: PET/iPET's ensemble (the distillation's teacher) scored on the unlabelled pool "
        "against the labels the data has there, which no method sees (mean over the seeds that recorded it)."
    )
    return "\n".join(
        [legend, "", *lines, "", "Settings:", *[f"- {s}" for s in settings_lines], "", *[f"- {n}" for n in notes]]
    )


def _pool_cell(agg: dict) -> str:
    if agg.get("pool_ensemble_mean") is None:
        return ""
    measured, seeds = agg["pool_ensemble_seeds"], agg["n_seeds"]
    return f"{100 * agg['pool_ensemble_mean']:.1f}" + ("" if measured == seeds else f" ({measured} of {seeds} seeds)")


def plot(aggregates: list[dict], path: Path, title: str) -> Path | None:
    """Accuracy (mean ± std) per method, one panel per (task, |T|); None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if _warned:
            return None
        _warned.append(True)
        logger.warning("matplotlib is not installed: no plot (pip install 'promptkit[benchmarks]')")
        return None
    done = [a for a in aggregates if a["n_seeds"]]
    panels = sorted({(a["task"], a["size"]) for a in done}, key=lambda p: (p[0], p[1]))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (task, size) in zip(axes[0], panels):
        rows = [a for a in done if (a["task"], a["size"]) == (task, size)]
        y = np.arange(len(rows))
        ax.barh(y, [a["accuracy_mean"] for a in rows], xerr=[a["accuracy_std"] for a in rows], capsize=3)
        ax.set_yticks(y, labels=[a["method"] for a in rows], fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_xlabel("accuracy")
        ax.set_title(f"{task}, |T|={size}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def merge_key(run: dict) -> tuple:
    return run["task"], run["size"], run["seed"], run["method"], json.dumps(run["settings"], sort_keys=True)


def earlier_runs(paths: list[Path]) -> dict[tuple, dict]:
    """Finished (error-free) runs of earlier result files, by (task, |T|, seed, method, settings)."""
    runs = {}
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text())
            found = [run for run in payload["runs"] if not run.get("error")]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise SystemExit(f"--merge {path}: cannot read it as a pet benchmark results file ({err!r})") from None
        runs.update({merge_key(run): run for run in found})
    return runs
