"""What a training run is, as JSON: checkpoints record it, and a resume must match it.

A checkpoint belongs to one run: a template, a verbalizer, a backbone configuration,
training data (a fingerprint), a loss and the optimisation settings. Resuming compares
every key of the saved manifest with the current run and names each difference, so a
checkpoint never loads into another run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from promptkit.errors import CheckpointError
from promptkit.train_config import TrainConfig

SETTINGS = (
    "learning_rate", "batch_size", "grad_accumulation", "max_steps", "epochs", "warmup_ratio", "lr_schedule",
    "weight_decay", "max_grad_norm", "seed", "mixed_precision", "label_key",
)  # fmt: skip
"""TrainConfig fields recorded in the manifest; resuming requires them unchanged."""
MAY_CHANGE = ("progress", "output_dir", "save_every", "eval_every", "patience")
"""TrainConfig fields that may differ when resuming: they change where and how often, not what is optimised."""
RESUME_FIX = (
    "Resume with the same model, data, loss and TrainConfig settings, or start a new output_dir without resume_from."
)


def run_settings(config: TrainConfig) -> dict[str, Any]:
    """The :data:`SETTINGS` of ``config``, with the learning rate :func:`train` actually uses."""
    settings = {name: getattr(config, name) for name in SETTINGS}
    settings["learning_rate"] = config.resolved_learning_rate
    return settings


def run_manifest(model: Any, prompts: list, targets: torch.Tensor, config: TrainConfig | None = None) -> dict[str, Any]:
    """What a run trains; two runs with equal manifests can share checkpoints.

    With ``config``, the manifest also records :func:`run_settings` under ``"settings"``.
    """
    data = hashlib.sha256(json.dumps([p.to_text() for p in prompts]).encode())
    data.update(targets.numpy().tobytes())
    backbone = json.loads(model.backbone.config.to_json_string(use_diff=False))
    for volatile in ("_name_or_path", "transformers_version"):
        backbone.pop(volatile, None)
    manifest = {
        "template": model.template.text,
        "verbalizer": model.verbalizer.to_dict()["label_words"],
        "backbone_config": backbone,
        "data": data.hexdigest(),
    }
    if config is not None:
        manifest["settings"] = run_settings(config)
    return json.loads(json.dumps(manifest))  # normalise (int label keys become strings)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dict_diff(old: dict, new: dict, label: str = "{}", limit: int = 8) -> list[str]:
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, ...) != new.get(k, ...))

    def shown(side: dict, key: str) -> str:
        return _short(side[key]) if key in side else "(not recorded)"

    diffs = [f"{label.format(k)}: {shown(old, k)} in the checkpoint, {shown(new, k)} now" for k in changed[:limit]]
    return diffs + ([f"and {len(changed) - limit} more"] if len(changed) > limit else [])


def _difference(key: str, old: Any, new: Any) -> str:
    if key == "template":
        return f"template text {old!r} != {new!r}"
    if key == "verbalizer":
        return f"verbalizer {old} != {new}"
    if key == "data":
        return "training examples or targets (their fingerprint differs)"
    if key == "settings" and isinstance(old, dict) and isinstance(new, dict):
        return "settings (" + ", ".join(_dict_diff(old, new, "TrainConfig.{}")) + ")"
    if isinstance(old, dict) and isinstance(new, dict):
        name = "backbone config" if key == "backbone_config" else key
        return f"{name} (" + ", ".join(_dict_diff(old, new)) + ")"
    return f"{key}: {_short(old)} in the checkpoint, {_short(new)} now"


def check_manifest(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Refuse to resume a checkpoint whose run differs from the current one, naming every difference.

    Every key of either manifest is compared; a key the checkpoint lacks (written before
    promptkit recorded it) is reported as such, never a KeyError.
    """
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"{Path(where) / 'manifest.json'} is damaged: expected a JSON object, got {_short(saved)}"
        )
    known = ["template", "verbalizer", "backbone_config", "data", "settings"]
    keys = [k for k in known if k in saved or k in current] + sorted((saved.keys() | current.keys()) - set(known))
    problems = []
    for key in keys:
        if key not in saved:
            problems.append(
                f"{key}: not recorded in the checkpoint (saved by an older promptkit, so it cannot be checked), "
                f"{_short(current[key])} now"
            )
        elif key not in current:
            problems.append(f"{key}: {_short(saved[key])} in the checkpoint, not part of this run")
        elif saved[key] != current[key]:
            problems.append(_difference(key, saved[key], current[key]))
    if problems:
        raise CheckpointError(
            f"cannot resume from {where}: it was saved by a different run; differs in {'; '.join(problems)}. "
            + RESUME_FIX
        )
