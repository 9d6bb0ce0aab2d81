"""PET's output folder: what a run was asked to do, and every finished member's scores.

Layout (every file written crash-safely with :mod:`promptkit.atomic`)::

    output_dir/
      settings.json                      every setting that changes the members' results
      generation-0/member-P-R/           PVP P, repetition R (a folder written as a whole)
        scores.safetensors               "log_probs": [N, L] label log-probs on the unlabelled rows
        member.json                      pre-training accuracy, seed, train summary
      generation-1/...                   iPET's later generations
      ensemble.safetensors               "soft_labels": [N, L], the merged last generation

Why: members are the expensive part, and their scores on the unlabelled set are all the
later steps need. A re-run with the same folder and settings loads finished members
instead of training them again; :meth:`promptkit.strategies.pet.Pet.distill` redoes only
the distillation from ``ensemble.safetensors``. A folder written with other settings is
refused, naming each difference, so scores of another run are never mixed in. The
fine-tuned members' weights are not kept (each is a whole backbone).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptkit import atomic
from promptkit.errors import CheckpointError
from promptkit.file_readers import read_json, read_safetensors

SETTINGS = "settings.json"
ENSEMBLE = "ensemble.safetensors"


def fingerprint(value: Any) -> str:
    """SHA-256 of ``value`` as canonical JSON (rows, targets); the same data gives the same text."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}`` (lists stay values), to name a differing setting exactly."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PetStore:
    """One PET run's folder; with ``root=None`` nothing is written and nothing is found (no resume).

    Args:
        root: the output folder, or None.
        settings: JSON-ready settings of the run; compared with a folder's ``settings.json``.
    """

    def __init__(self, root: str | Path | None, settings: dict[str, Any]) -> None:
        self.root = None if root is None else Path(root)
        self.settings = json.loads(json.dumps(settings, default=str))  # normalised as read back

    def open(self) -> None:
        """Check an existing folder's settings (CheckpointError naming each difference) or write them."""
        if self.root is None:
            return
        path = self.root / SETTINGS
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            atomic.write_text(path, json.dumps(self.settings, indent=1, sort_keys=True))
            return
        old = read_json(path, CheckpointError)
        before, now = _flat(old), _flat(self.settings)
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k, ...) != now.get(k, ...))
        if changed:
            lines = [
                f"  {k}: {_short(before[k]) if k in before else '(not recorded)'} -> "
                f"{_short(now[k]) if k in now else '(not set)'}"
                for k in changed
            ]
            raise CheckpointError(
                f"output_dir {self.root} holds a PET run with other settings ({len(changed)} differ, saved -> now):\n"
                + "\n".join(lines)
                + "\nUse another output_dir, or the same settings to resume."
            )

    def member_dir(self, generation: int, pvp: int, repetition: int) -> Path:
        assert self.root is not None
        return self.root / f"generation-{generation}" / f"member-{pvp}-{repetition}"

    def has_member(self, generation: int, pvp: int, repetition: int) -> bool:
        """Whether member (generation, pvp, repetition) finished (its folder is complete)."""
        if self.root is None:
            return False
        return (atomic.recover_dir(self.member_dir(generation, pvp, repetition)) / "member.json").exists()

    def load_member(self, generation: int, pvp: int, repetition: int) -> tuple[np.ndarray, dict[str, Any]] | None:
        """A finished member's ``([N, L] log-probs, member.json)``, or None if it has not finished."""
        if self.root is None:
            return None
        folder = atomic.recover_dir(self.member_dir(generation, pvp, repetition))
        if not (folder / "member.json").exists():
            return None
        info = read_json(folder / "member.json", CheckpointError)
        tensors = read_safetensors(folder / "scores.safetensors", CheckpointError)
        if not isinstance(info, dict) or "log_probs" not in tensors:
            raise CheckpointError(
                f"member folder {folder} is damaged (no member info or log_probs); delete it to retrain"
            )
        scores = tensors["log_probs"].numpy()
        return scores, info

    def save_member(self, generation: int, pvp: int, repetition: int, scores: np.ndarray, info: dict) -> None:
        """Write a finished member's scores and info as one folder (nothing on disk until both are complete)."""
        if self.root is None:
            return
        with atomic.atomic_dir(self.member_dir(generation, pvp, repetition)) as tmp:
            atomic.save_safetensors({"log_probs": torch.from_numpy(np.ascontiguousarray(scores))},
                                    tmp / "scores.safetensors")  # fmt: skip
            atomic.write_text(tmp / "member.json", json.dumps(info, indent=1, sort_keys=True, default=str))

    def save_ensemble(self, soft_labels: np.ndarray) -> None:
        if self.root is not None:
            tensor = torch.from_numpy(np.ascontiguousarray(soft_labels, dtype=np.float64))
            atomic.save_safetensors({"soft_labels": tensor}, self.root / ENSEMBLE)

    def load_ensemble(self) -> np.ndarray:
        """The saved ensemble's soft labels ``[N, L]``; CheckpointError if there are none."""
        path = None if self.root is None else self.root / ENSEMBLE
        if path is None or not path.exists():
            raise CheckpointError(f"no saved ensemble at {path}; run fit(...) with output_dir={str(self.root)!r} first")
        tensors = read_safetensors(path, CheckpointError)
        if "soft_labels" not in tensors:
            raise CheckpointError(f"{path} is damaged: it holds no soft_labels; run fit(...) again to rebuild it")
        return tensors["soft_labels"].numpy()

    def saved_settings(self) -> dict[str, Any]:
        """The folder's ``settings.json``; CheckpointError if missing."""
        path = None if self.root is None else self.root / SETTINGS
        if path is None or not path.exists():
            raise CheckpointError(f"{path} does not exist: output_dir {self.root} holds no PET run")
        return read_json(path, CheckpointError)
