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

:meth:`PetStore.take_over` lets an iPET run start from a finished run's folder: iPET's
generation 0 *is* PET's ensemble, and an iPET run's generations are those of any longer run
with its settings, so those members are copied in instead of trained again.
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


def _differences(before: dict[str, Any], now: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """One ``key: saved -> now`` line per differing setting (flattened keys; top-level ``ignore`` skipped)."""
    old, new = _flat(before), _flat(now)
    changed = sorted(
        k for k in old.keys() | new.keys() if k.split(".")[0] not in ignore and old.get(k, ...) != new.get(k, ...)
    )
    return [
        f"  {k}: {_short(old[k]) if k in old else '(not recorded)'} -> {_short(new[k]) if k in new else '(not set)'}"
        for k in changed
    ]


class PetStore:
    """One PET run's folder; with ``root=None`` nothing is written and nothing is found (no resume).

    Args:
        root: the output folder, or None.
        settings: JSON-ready settings of the run; compared with a folder's ``settings.json``.
    """

    def __init__(self, root: str | Path | None, settings: dict[str, Any]) -> None:
        self.root = None if root is None else Path(root)
        self.settings = json.loads(json.dumps(settings, default=str))  # normalised as read back
        self.start: PetStore | None = None  # a finished run whose first generations this one takes over
        self.shared = 0  # how many (take_over)

    def open(self) -> None:
        """Check an existing folder's settings (CheckpointError naming each difference) or write them."""
        if self.root is None:
            return
        path = self.root / SETTINGS
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            atomic.write_text(path, json.dumps(self.settings, indent=1, sort_keys=True))
            return
        lines = _differences(read_json(path, CheckpointError), self.settings)
        if lines:
            raise CheckpointError(
                f"output_dir {self.root} holds a PET run with other settings ({len(lines)} differ, saved -> now):\n"
                + "\n".join(lines)
                + "\nUse another output_dir, or the same settings to resume."
            )

    def take_over(self, source: str | Path, schedule: tuple[str, ...], labelled: bool) -> None:
        """Read the members this run would train alike from ``source``, a finished PET or iPET run's folder.

        Generation g depends only on the settings and on the generations before it. So every
        generation of ``source`` is taken when its settings equal this run's apart from
        ``strategy`` and ``generations``; with ``labelled`` rows, generation 0 (PET's ensemble)
        alone when the ``schedule`` keys differ too. CheckpointError names each difference
        otherwise. A member read from ``source`` is written into this folder too, so a resume
        no longer needs ``source``. :attr:`shared` says how many generations are taken.
        """
        start = PetStore(source, {})
        saved = start.saved_settings()
        runs = ("strategy", "generations")
        if not _differences(saved, self.settings, runs):
            shared = int(saved.get("generations", 1))
        else:
            lines = _differences(saved, self.settings, runs + schedule if labelled else runs)
            if lines:
                raise CheckpointError(
                    f"start_from {start.root} holds a run whose generation 0 is not this run's "
                    f"({len(lines)} settings differ, saved -> now):\n" + "\n".join(lines)
                    + "\nPass the PVPs, repetitions, member config, seed and data of that run, or no start_from."
                )  # fmt: skip
            shared = 1
        self.start, self.shared = start, shared

    def member_dir(self, generation: int, pvp: int, repetition: int) -> Path:
        assert self.root is not None
        return self.root / f"generation-{generation}" / f"member-{pvp}-{repetition}"

    def has_member(self, generation: int, pvp: int, repetition: int) -> bool:
        """Whether member (generation, pvp, repetition) finished (its folder is complete)."""
        if self.start is not None and generation < self.shared and self.start.has_member(generation, pvp, repetition):
            return True
        if self.root is None:
            return False
        return (atomic.recover_dir(self.member_dir(generation, pvp, repetition)) / "member.json").exists()

    def load_member(self, generation: int, pvp: int, repetition: int) -> tuple[np.ndarray, dict[str, Any]] | None:
        """A finished member's ``([N, L] log-probs, member.json)``, or None if it has not finished.

        A member of a generation :meth:`take_over` took, missing here, is read from there and copied in.
        """
        folder = None if self.root is None else atomic.recover_dir(self.member_dir(generation, pvp, repetition))
        if folder is None or not (folder / "member.json").exists():
            taken = self.start is not None and generation < self.shared
            found = self.start.load_member(generation, pvp, repetition) if taken else None
            if found is not None:
                self.save_member(generation, pvp, repetition, *found)
            return found
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
