"""A copy of promptkit laid out like a fresh clone, outside this repository's folder tree."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns("__pycache__", "results", "runs", "*.pyc")


def copy_checkout(target: Path) -> Path:
    """Copy the package, its catalog folders and the benchmark scripts to ``target``.

    Run scripts there with ``PYTHONPATH=target`` so ``import promptkit`` finds the copy (its
    package folder has no ``shared/data`` above it) before the editable install of this
    checkout. ``benchmarks/results`` is not copied, so a script that writes results is seen.
    """
    for name in ("promptkit", "templates", "verbalizers", "benchmarks"):
        shutil.copytree(REPO / name, target / name, ignore=SKIP)
    return target


def offline_cache(target: Path, real_cache: Path) -> Path:
    """An empty promptkit cache at ``target``, except links to already dequantized backbones.

    The data cache (``target/data``) starts empty; linking the backbone weights only saves the
    one-off GGUF dequantization of a first run.
    """
    target.mkdir(parents=True, exist_ok=True)
    if real_cache.is_dir():
        for entry in real_cache.iterdir():
            if entry.is_dir() and entry.name != "data":
                os.symlink(entry, target / entry.name)
    return target
