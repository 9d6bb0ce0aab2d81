"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a folder ``checkpoint-<step>`` inside ``TrainConfig.output_dir`` holding

- ``model.safetensors``: the trainable parameters (all of them for full fine-tuning, only
  the adapters for LoRA);
- ``optimizer.safetensors``: the optimizer's per-parameter tensors (Adam moments, step);
- ``best.safetensors``: the best weights on the dev set so far, if there is a dev set;
- ``rng.safetensors``: torch's CPU (and CUDA) generator states;
- ``manifest.json``: what the run trains (template text, verbalizer, backbone config,
  data fingerprint, the settings that shape the optimisation, and whatever else
  :func:`promptkit.train.train` adds, such as the loss), checked before resuming so a
  checkpoint never loads into another run;
- ``state.json`` (written last): optimizer hyper-parameters, scheduler state, Python and
  NumPy RNG states, the loop position (step, epoch, update within the epoch), history, the
  run id, and the size and SHA-256 of every other file.

**Writing.** A checkpoint is written into a temporary sibling folder, every file is
fsynced, and the folder is renamed into place (:func:`promptkit.atomic.replace_dir`): the
rename is the commit point, so a run killed while saving leaves no half-written
``checkpoint-*`` folder, only a hidden ``.checkpoint-*.tmp`` folder that is never read.

**Runs and pruning.** Every run gets a run id (kept in the loop state, so a resumed run
keeps the id of the run it continues). After writing ``checkpoint-<step>``, only
checkpoints of the same run id at or below ``step`` are pruned, keeping the newest
:data:`KEEP` by step; checkpoints of other runs (or unreadable ones) are never deleted. A
run starting in an ``output_dir`` that holds other runs' checkpoints logs a warning
naming them (:func:`warn_foreign`); if it must write a step another run already wrote,
the other run's folder is renamed to ``checkpoint-<step>.displaced-<random>``, not deleted.

**Resuming** (:func:`resume`). From an ``output_dir``: checkpoints are tried newest step
first; each is validated fully (every file present, sizes and hashes as recorded, JSON
and safetensors parse, tensors match the model, manifest matches this run) before
anything is loaded. An unusable one is skipped with a warning naming the folder and the
reason; if none is usable, :class:`~promptkit.errors.CheckpointError` lists them all.
From an explicit checkpoint folder there is no fallback: any problem raises
:class:`~promptkit.errors.CheckpointError` naming the file.

**Settings.** The TrainConfig fields in :data:`SETTINGS` shape the optimisation and must
be equal to resume (a checkpoint saved with another learning rate would otherwise keep
its old rate silently). The fields in :data:`MAY_CHANGE` (progress, output_dir,
save_every, eval_every, patience) may differ between the run that saved and the one that
resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import secrets
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from promptkit import atomic
from promptkit.checkpoint_manifest import RESUME_FIX, check_manifest
from promptkit.errors import CheckpointError

logger = logging.getLogger(__name__)
PREFIX = "checkpoint-"
KEEP = 2  # checkpoints of the current run kept on disk; older ones of that run are deleted after a new one
FORMAT = 2  # state.json "format": 2 records the run id and the files' sizes and hashes
REQUIRED = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "manifest.json", "state.json")
_NAME = re.compile(re.escape(PREFIX) + r"(\d+)")


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def new_run_id() -> str:
    """A fresh id for a training run; checkpoints record it so a run prunes only its own."""
    return uuid.uuid4().hex[:16]


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


# ------------------------------------------------------------------ save
def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the parameters that train (``requires_grad``)."""
    return {n: p.detach().cpu().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def assign(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` (from :func:`trainable_state`) into ``model`` in place."""
    params = dict(model.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise CheckpointError(f"checkpoint has parameters the model lacks: {missing[:5]}")
    shapes = [
        f"{n}: {list(v.shape)} vs {list(params[n].shape)}" for n, v in weights.items() if v.shape != params[n].shape
    ]
    if shapes:
        raise CheckpointError(f"checkpoint parameter shapes differ from the model's (saved vs model): {shapes[:5]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksum(state: dict[str, Any]) -> str:
    """SHA-256 of ``state`` (without its own ``checksum``) in canonical JSON: catches edits that still parse."""
    body = json.dumps({k: v for k, v in state.items() if k != "checksum"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def _run_of(path: Path) -> str | None:
    """The run id recorded in checkpoint ``path``, or None if it has none or cannot be read."""
    try:
        return json.loads((path / "state.json").read_bytes())["loop"].get("run")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save(directory: str | Path, step: int, parts: dict[str, Any]) -> Path:
    """Write one checkpoint atomically; ``parts`` holds model, optimizer, scheduler, state, manifest, best.

    ``parts["state"]`` (the loop state) gets a run id if it has none. After the new folder is
    in place, older checkpoints of the same run are pruned to :data:`KEEP`; see the module docstring.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    run = parts["state"].setdefault("run", new_run_id())
    final = root / checkpoint_name(step)
    tmp = root / f".{final.name}.{run}.tmp"  # one name per run and step: a resumed run clears its own leftovers
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(parts["model"]), str(tmp / "model.safetensors"))
    opt_tensors, opt_rest = _split_optimizer(parts["optimizer"].state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    if parts["best"] is not None:
        save_file(parts["best"], str(tmp / "best.safetensors"))
    rng_json, rng_tensors = rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    (tmp / "manifest.json").write_text(json.dumps(parts["manifest"], indent=1))
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
    scheduler = {k: v for k, v in parts["scheduler"].state_dict().items() if k != "lr_lambdas"}
    state = {"format": FORMAT, "loop": parts["state"], "optimizer": opt_rest, "scheduler": scheduler,
             "rng": rng_json, "files": files}  # fmt: skip
    state["checksum"] = _checksum(state)
    (tmp / "state.json").write_text(json.dumps(state))
    atomic.recover_dir(final)
    if final.exists() and _run_of(final) != run:
        aside = final.with_name(f"{final.name}.displaced-{secrets.token_hex(3)}")
        final.rename(aside)
        logger.warning("moved %s, written by another run, to %s to write this run's step %d", final, aside, step)
    atomic.replace_dir(tmp, final)  # fsyncs every file, then the rename commits
    _prune(root, run, step)
    logger.info("saved checkpoint %s", final)
    return final


def _prune(root: Path, run: str, step: int) -> None:
    """Delete this run's checkpoints at or below ``step`` except the newest :data:`KEEP`, and its stale temp folders."""
    own = [(s, p) for s, p in _checkpoints(root) if s <= step and _run_of(p) == run]
    for _, path in sorted(own, reverse=True)[KEEP:]:
        # Hidden first, so a crash during the deletion never leaves a partial checkpoint-* folder.
        hidden = root / f".{path.name}.{run}.tmp"
        shutil.rmtree(hidden, ignore_errors=True)
        path.rename(hidden)
    for stale in root.glob(f".{PREFIX}*.{run}.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the ``checkpoint-<step>`` folders in ``root``, newest step first.

    A swap that a crash interrupted is finished or undone first (:func:`promptkit.atomic.recover_dir`).
    """
    if not root.is_dir():
        return []
    for old in root.glob(f"{PREFIX}*{atomic.OLD_SUFFIX}"):
        if _NAME.fullmatch(old.name[: -len(atomic.OLD_SUFFIX)]):
            atomic.recover_dir(old.with_name(old.name[: -len(atomic.OLD_SUFFIX)]))
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.fullmatch(p.name)) and p.is_dir()]
    return sorted(found, key=lambda item: item[0], reverse=True)


def warn_foreign(directory: str | Path | None, run: str) -> list[Path]:
    """Warn (and return them) if ``directory`` holds checkpoints of runs other than ``run``; they are kept."""
    if directory is None:
        return []
    foreign = sorted(p for _, p in _checkpoints(Path(directory)) if _run_of(p) != run)
    if foreign:
        logger.warning(
            "output_dir %s already holds %d checkpoint(s) of another run: %s. This run never deletes or prunes them "
            "(a step it must write again is renamed to <name>.displaced-*), but resume_from=%s resumes the newest "
            "usable checkpoint of any run. Use a new output_dir to keep runs apart.",
            directory, len(foreign), ", ".join(p.name for p in foreign), directory,
        )  # fmt: skip
    return foreign


# ------------------------------------------------------------------ load
def _is_checkpoint(path: Path) -> bool:
    return bool(_NAME.fullmatch(path.name)) or any((path / name).exists() for name in REQUIRED)


def latest(directory: str | Path) -> Path:
    """``directory`` itself if it is a checkpoint, else its newest ``checkpoint-*`` folder (not validated)."""
    root = Path(directory)
    if _is_checkpoint(root):
        return root
    found = _checkpoints(root)
    if not found:
        raise CheckpointError(
            f"no checkpoint in {root}; resume_from must be a checkpoint folder or an output_dir "
            f"containing {PREFIX}* folders (written when TrainConfig.save_every > 0)"
        )
    return found[0][1]


_DAMAGE_FIX = "Resume from an earlier checkpoint folder, or start a new output_dir without resume_from."


def _damaged(path: Path, name: str, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is damaged: {name} {problem}. {_DAMAGE_FIX}")


def _read_json(path: Path, name: str, state: dict | None) -> Any:
    data = _read_bytes(path, name, state)
    try:
        return json.loads(data)
    except ValueError as err:
        raise _damaged(path, name, f"is not valid JSON ({err})") from None


def _read_bytes(path: Path, name: str, state: dict | None) -> bytes:
    file = path / name
    if not file.is_file():
        raise _damaged(path, name, "is missing")
    data = file.read_bytes()
    recorded = (state or {}).get("files", {}).get(name)
    if recorded is not None:
        if len(data) != recorded["bytes"]:
            raise _damaged(path, name, f"has {len(data)} bytes where {recorded['bytes']} were written (truncated?)")
        if hashlib.sha256(data).hexdigest() != recorded["sha256"]:
            raise _damaged(path, name, "differs from what was written (SHA-256 mismatch)")
    return data


def _read_tensors(path: Path, name: str, state: dict | None) -> dict[str, torch.Tensor]:
    data = _read_bytes(path, name, state)
    try:
        return load_tensors(data)
    except Exception as err:  # safetensors raises its own SafetensorError (an Exception)
        raise _damaged(path, name, f"is not a readable safetensors file ({err})") from None


def _check_weights(path: Path, name: str, weights: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, extra = sorted(trainable.keys() - weights.keys()), sorted(weights.keys() - trainable.keys())
    shapes = [f"{n} {list(w.shape)} != {list(trainable[n].shape)}" for n, w in weights.items()
              if n in trainable and w.shape != trainable[n].shape]  # fmt: skip
    if missing or extra or shapes:
        raise CheckpointError(
            f"cannot resume from {path}: {name} does not match the model's trainable parameters "
            f"(missing: {missing[:5]}, unexpected: {extra[:5]}, shapes saved != model: {shapes[:5]}); was it saved "
            "with other frozen parameters or adapters? Resume with the same strategy settings, or start a new "
            "output_dir."
        )


_STATE_KEYS = ("loop", "optimizer", "scheduler", "rng")


def _check_state(path: Path, state: Any) -> None:
    """``state.json``'s structure, its checksum (format 2) and its RNG states, before anything is loaded."""
    if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) for k in _STATE_KEYS):
        raise _damaged(path, "state.json", "lacks the loop, optimizer, scheduler or rng entries (JSON objects)")
    if "checksum" in state and state["checksum"] != _checksum(state):
        raise _damaged(path, "state.json", "differs from what was written (checksum mismatch)")
    files = state.get("files", {})
    valid = isinstance(files, dict) and all(
        isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("sha256"), str)
        for v in files.values()
    )
    if not valid:
        raise _damaged(path, "state.json", "has a malformed 'files' entry")
    loop = state["loop"]
    kinds = {"step": int, "epoch": int, "update": int, "losses": list, "dev_scores": list}
    if not all(isinstance(loop.get(k), kind) for k, kind in kinds.items()):
        raise _damaged(path, "state.json", "has a malformed 'loop' entry (step, epoch, update, losses, dev_scores)")
    try:  # on throwaway generators: the process's own are set only when the loop continues
        version, internal, gauss = state["rng"]["python"]
        random.Random().setstate((version, tuple(internal), gauss))
        np_state = dict(state["rng"]["numpy"], state=dict(state["rng"]["numpy"]["state"]))
        np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
        np.random.RandomState().set_state(np_state)
    except (KeyError, TypeError, ValueError) as err:
        raise _damaged(path, "state.json", f"holds malformed random generator states ({err!r})") from None


def _read(path: Path, parts: dict[str, Any]) -> dict[str, Any]:
    """Read and validate checkpoint ``path`` completely, changing nothing; raise CheckpointError naming the file."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a folder)")
    state = _read_json(path, "state.json", None)
    _check_state(path, state)
    for name in [*REQUIRED, *state.get("files", {})]:
        if not (path / name).is_file():
            raise _damaged(path, name, "is missing")
    check_manifest(_read_json(path, "manifest.json", state), parts["manifest"], path)
    model = _read_tensors(path, "model.safetensors", state)
    _check_weights(path, "model.safetensors", model, parts["model"])
    best = None
    if (path / "best.safetensors").is_file():
        best = _read_tensors(path, "best.safetensors", state)
        _check_weights(path, "best.safetensors", best, parts["model"])
    opt_tensors = _read_tensors(path, "optimizer.safetensors", state)
    try:
        optimizer = _join_optimizer(opt_tensors, state["optimizer"])
        sizes = [len(g["params"]) for g in optimizer["param_groups"]]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise _damaged(path, "state.json", f"holds a malformed optimizer entry ({err!r})") from None
    if sizes != [len(g["params"]) for g in parts["optimizer"].param_groups]:
        raise _damaged(path, "state.json", f"holds optimizer parameter groups of sizes {sizes}, unlike this run's")
    rng = _read_tensors(path, "rng.safetensors", state)
    if "torch" not in rng:
        raise _damaged(path, "rng.safetensors", "lacks the torch generator state")
    return {"state": state, "model": model, "best": best, "optimizer": optimizer, "rng": rng}


def _apply(path: Path, loaded: dict[str, Any], parts: dict[str, Any]) -> tuple[dict[str, Any], dict | None]:
    assign(parts["model"], loaded["model"])
    state = loaded["state"]
    try:
        parts["optimizer"].load_state_dict(loaded["optimizer"])
        lambdas = [None] * len(parts["optimizer"].param_groups)  # our schedules are plain functions
        parts["scheduler"].load_state_dict({**state["scheduler"], "lr_lambdas": lambdas})
    except (KeyError, TypeError, ValueError) as err:
        raise _damaged(path, "optimizer.safetensors/state.json", f"hold an unusable optimizer state ({err})") from err
    state["loop"].setdefault("run", new_run_id())  # checkpoints from before run ids start a new run id
    state["rng_tensors"] = loaded["rng"]
    return state, loaded["best"]


def load(path: Path, parts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Validate checkpoint ``path`` completely, then restore model, optimizer and scheduler; return (state, best).

    Nothing is changed if validation fails (:class:`CheckpointError` names the file and the
    problem). RNG states are restored by :func:`restore_rng` right before the loop continues.
    """
    path = Path(path)
    return _apply(path, _read(path, parts), parts)


def resume(resume_from: str | Path, parts: dict[str, Any]) -> tuple[Path, dict[str, Any], dict | None]:
    """Load the checkpoint ``resume_from`` names; return (its folder, state, best weights).

    ``resume_from`` is a checkpoint folder (used as is: a problem raises) or an output_dir:
    its newest usable checkpoint by step, skipping unusable ones with a warning.
    """
    root = Path(resume_from)
    if _NAME.fullmatch(root.name):
        atomic.recover_dir(root)
    if not root.is_dir():
        raise CheckpointError(f"resume_from={str(root)!r} does not exist; pass a checkpoint folder or an output_dir")
    if _is_checkpoint(root):
        return root, *load(root, parts)
    found = _checkpoints(root)
    if not found:
        latest(root)  # raises CheckpointError("no checkpoint in ...")
    unusable: list[tuple[Path, CheckpointError]] = []
    for _, path in found:
        try:
            loaded = _read(path, parts)
        except CheckpointError as err:
            unusable.append((path, err))
            logger.warning("skipping unusable checkpoint %s: %s", path, err)
            continue
        if unusable:
            logger.warning(
                "resuming from %s, the newest usable checkpoint; skipped newer unusable one(s): %s",
                path, ", ".join(p.name for p, _ in unusable),
            )  # fmt: skip
        return path, *_apply(path, loaded, parts)
    reasons = [str(err).replace(RESUME_FIX, "").replace(_DAMAGE_FIX, "").strip().rstrip(".") for _, err in unusable]
    raise CheckpointError(
        f"no usable checkpoint in {root}: " + "; ".join(f"[{p.name}] {r}" for (p, _), r in zip(unusable, reasons))
        + f". {RESUME_FIX}"
    )  # fmt: skip


def restore_rng(path: Path, state: dict[str, Any]) -> None:
    """Restore the RNG states of a checkpoint loaded by :func:`load` or :func:`resume`."""
    tensors = state.pop("rng_tensors", None)
    if tensors is None:
        tensors = _read_tensors(Path(path), "rng.safetensors", state)
    set_rng_state(state["rng"], tensors)
