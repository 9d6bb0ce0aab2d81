"""Helpers shared by the benchmark scripts: output files, a markdown table, missing data.

Importing this module makes a missing benchmark split (``promptkit.data.DataUnavailableError``,
raised by ``load_task`` when no source has the data) end a script with its one-paragraph
message and exit status 1 instead of a traceback.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from promptkit.data import DataUnavailableError

RESULTS = Path(__file__).resolve().parent / "results"


def _missing_data_hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    """Print a missing-data error as its message alone (Python then exits with status 1)."""
    if isinstance(error, DataUnavailableError):
        print(f"\n{error}", file=sys.stderr)
        return
    sys.__excepthook__(kind, error, trace)


sys.excepthook = _missing_data_hook


def environment() -> dict[str, Any]:
    """Facts needed to compare numbers across machines."""
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows of dicts as a GitHub markdown table (floats with 4 significant digits)."""

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any], table: str, out_dir: Path | None = None) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` under ``out_dir`` (default benchmarks/results)."""
    out = out_dir or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / f"{name}.md").write_text(table + "\n")
    return out / f"{name}.json"
