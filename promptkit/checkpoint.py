"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a folder ``checkpoint-<step>`` inside ``TrainConfig.output_dir`` holding

- ``model.safetensors``: the trainable parameters (all of them for full fine-tuning, only
  the adapters for LoRA);
- ``optimizer.safetensors``: the optimizer's per-parameter tensors (Adam moments, step);
- ``best.safetensors``: the best weights on the dev set so far, if there is a dev set;
- ``rng.safetensors``: torch's CPU (and CUDA) generator states;
- ``state.json``: optimizer hyper-parameters, scheduler state, Python and NumPy RNG
  states, the loop position (step, epoch, update within the epoch) and history;
- ``manifest.json``: what the run trains (template text, verbalizer, backbone config,
  data fingerprint), checked before resuming so a checkpoint never loads into another run.

A checkpoint is written to a temporary folder and renamed into place, so a run killed
while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from promptkit.errors import CheckpointError
from promptkit.persistence import verbalizer_to_dict

logger = logging.getLogger(__name__)
PREFIX = "checkpoint-"
KEEP = 2  # checkpoints kept on disk; older ones are deleted after a new one is written


# ------------------------------------------------------------------ manifest
def run_manifest(model: Any, prompts: list, targets: torch.Tensor) -> dict[str, Any]:
    """What a run trains; two runs with equal manifests can share checkpoints."""
    data = hashlib.sha256(json.dumps([p.to_text() for p in prompts]).encode())
    data.update(targets.numpy().tobytes())
    config = json.loads(model.backbone.config.to_json_string(use_diff=False))
    for volatile in ("_name_or_path", "transformers_version"):
        config.pop(volatile, None)
    manifest = {
        "template": model.template.text,
        "verbalizer": verbalizer_to_dict(model.verbalizer)["label_words"],
        "backbone_config": config,
        "data": data.hexdigest(),
    }
    return json.loads(json.dumps(manifest))  # normalise (int label keys become strings)


def check_manifest(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Refuse to resume a checkpoint whose run differs from the current one, saying how."""
    problems = []
    if saved["template"] != current["template"]:
        problems.append(f"template text {saved['template']!r} != {current['template']!r}")
    if saved["verbalizer"] != current["verbalizer"]:
        problems.append(f"verbalizer {saved['verbalizer']} != {current['verbalizer']}")
    old, new = saved["backbone_config"], current["backbone_config"]
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} != {new.get(k)!r}" for k in changed[:5])
        problems.append(f"backbone config ({diffs})")
    if saved["data"] != current["data"]:
        problems.append("training examples or targets")
    if problems:
        raise CheckpointError(
            f"cannot resume from {where}: it was saved by a different run; differs in "
            + "; ".join(problems)
            + ". Resume with the same model and data, or start a new output_dir."
        )


# ------------------------------------------------------------------ rng
def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Python/NumPy generator states as JSON, torch generator states as tensors."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return {"python": [version, list(internal), gauss], "numpy": np_state}, tensors


def set_rng_state(json_part: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = json_part["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = json_part["numpy"]
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# ------------------------------------------------------------------ optimizer
def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *rest["scalars"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------ save / load
def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the parameters that train (``requires_grad``)."""
    return {n: p.detach().cpu().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def assign(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` (from :func:`trainable_state`) into ``model`` in place."""
    params = dict(model.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise CheckpointError(f"checkpoint has parameters the model lacks: {missing[:5]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def save(directory: str | Path, step: int, parts: dict[str, Any]) -> Path:
    """Write one checkpoint atomically; ``parts`` holds model, optimizer, scheduler, state, manifest, best."""
    root = Path(directory)
    final, tmp = root / f"{PREFIX}{step:08d}", root / f".{PREFIX}{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(parts["model"]), str(tmp / "model.safetensors"))
    opt_tensors, opt_rest = _split_optimizer(parts["optimizer"].state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    if parts["best"] is not None:
        save_file(parts["best"], str(tmp / "best.safetensors"))
    rng_json, rng_tensors = rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    scheduler = {k: v for k, v in parts["scheduler"].state_dict().items() if k != "lr_lambdas"}
    state = {"loop": parts["state"], "optimizer": opt_rest, "scheduler": scheduler, "rng": rng_json}
    (tmp / "state.json").write_text(json.dumps(state))
    (tmp / "manifest.json").write_text(json.dumps(parts["manifest"], indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob(f"{PREFIX}*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", final)
    return final


def latest(directory: str | Path) -> Path:
    """``directory`` itself if it is a checkpoint, else its newest ``checkpoint-*`` folder."""
    root = Path(directory)
    if (root / "state.json").is_file():
        return root
    found = sorted(p for p in root.glob(f"{PREFIX}*") if (p / "state.json").is_file())
    if not found:
        raise CheckpointError(
            f"no checkpoint in {root}; resume_from must be a checkpoint folder or an output_dir "
            f"containing {PREFIX}* folders (written when TrainConfig.save_every > 0)"
        )
    return found[-1]


def load(path: Path, parts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore model, optimizer and scheduler from ``path``; return (loop state, best weights).

    RNG states are restored by :func:`restore_rng` right before the loop continues.
    """
    check_manifest(json.loads((path / "manifest.json").read_text()), parts["manifest"], path)
    assign(parts["model"], load_file(str(path / "model.safetensors")))
    state = json.loads((path / "state.json").read_text())
    opt = _join_optimizer(load_file(str(path / "optimizer.safetensors")), state["optimizer"])
    parts["optimizer"].load_state_dict(opt)
    lambdas = [None] * len(parts["optimizer"].param_groups)  # our schedules are plain functions
    parts["scheduler"].load_state_dict({**state["scheduler"], "lr_lambdas": lambdas})
    best = load_file(str(path / "best.safetensors")) if (path / "best.safetensors").is_file() else None
    return state, best


def restore_rng(path: Path, state: dict[str, Any]) -> None:
    set_rng_state(state["rng"], load_file(str(path / "rng.safetensors")))
