"""Save and load a :class:`~promptkit.model.PromptModel` without pickle.

A saved folder holds ``promptkit.json`` (options, backbone source, add-ons, calibration),
``template.yaml`` and ``verbalizer.yaml`` (plain data), and, unless saved without it,
``backbone/`` (the transformers checkpoint as safetensors plus the tokenizer). A backbone
with LoRA adapters is saved as ``adapter/`` plus a reference to its base backbone. Each
attached add-on is kept in ``addons/<role>/``: its registered type and ``config()`` as
JSON, its weights as safetensors (see :mod:`promptkit.addons`).

The folder is written next to its destination and swapped into place at the end, so a
crash while saving leaves the previous save (or nothing) rather than a mix of both.
Loading reads safetensors only and names the file and the problem when one is damaged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from promptkit import atomic
from promptkit.addons import AddOn, addon_class, is_registered
from promptkit.backbones import ALIASES, load_backbone
from promptkit.errors import PromptkitError, SavedModelError
from promptkit.file_readers import read_json, read_safetensors
from promptkit.lora import load_adapter, save_adapter
from promptkit.precision import is_quantized
from promptkit.template import Template
from promptkit.verbalizer import Verbalizer

MANIFEST = "promptkit.json"
FORMAT_VERSION = 2
ADAPTER = "adapter"
_V1_ADDONS = ("slot_embeddings", "label_head", "prefix")  # format 1 kept these folders at the top level


def is_saved_model(path: str) -> bool:
    """Whether ``path`` is a folder written by :func:`save` (first finishing a swap a crash interrupted)."""
    return (atomic.recover_dir(path) / MANIFEST).is_file()


def check_not_a_broken_save(name_or_path: str) -> None:
    """Refuse a folder that looks like a damaged save, rather than loading it as a backbone."""
    root = Path(name_or_path)
    if root.is_dir() and not is_saved_model(name_or_path) and (root / "template.yaml").is_file():
        raise SavedModelError(f"{root} has template.yaml but no {MANIFEST}: the save is incomplete; save it again")


def missing_prompt_error(name_or_path: str) -> PromptkitError:
    """The error for ``from_pretrained(name)`` without template/verbalizer, worded by what ``name`` is."""
    if name_or_path not in ALIASES and not Path(name_or_path).exists():
        return SavedModelError(
            f"no saved model at {name_or_path!r}: no such folder (cwd {Path.cwd()}). Pass the folder "
            "save_pretrained wrote, or a backbone with template=... and verbalizer=..."
        )
    return SavedModelError(
        f"from_pretrained({name_or_path!r}) loads a backbone, which needs template=... and verbalizer=...; "
        f"a folder written by save_pretrained would hold them, and this is not one (no {MANIFEST})"
    )


# ------------------------------------------------------------------ add-ons
def save_addon(addon: AddOn, directory: Path) -> None:
    """Write an add-on: ``config.json`` (type + config) and ``model.safetensors``."""
    if not is_registered(addon):
        raise SavedModelError(
            f"cannot save add-on {addon.role!r} of type {type(addon).__name__}: it is not registered; decorate the "
            "class with @promptkit.addons.register_addon('name') and give it config()"
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"type": addon.addon_type, "config": addon.config()}, indent=2))
    weights = {k: v.detach().cpu().contiguous() for k, v in addon.state_dict().items()}
    save_file(weights, str(directory / "model.safetensors"))


def load_addon(directory: Path) -> AddOn:
    """Rebuild the add-on written by :func:`save_addon`; every tensor must be there."""
    where = directory / "config.json"
    saved = read_json(where)
    if not (isinstance(saved, dict) and isinstance(saved.get("type"), str) and isinstance(saved.get("config"), dict)):
        raise SavedModelError(f"{where} must hold {{'type': str, 'config': {{...}}}}; got {saved!r}")
    cls = addon_class(saved["type"], str(where))
    try:
        addon = cls.from_config(saved["config"])
    except (TypeError, ValueError) as err:
        raise SavedModelError(f"{where}: cannot build {saved['type']!r} from its config: {err}") from None
    weights = read_safetensors(directory / "model.safetensors")
    expected = addon.state_dict()
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or extra or wrong:
        raise SavedModelError(
            f"{directory / 'model.safetensors'} does not match its config: missing {missing}, unexpected {extra}, "
            f"wrong shape {wrong}; the file is damaged or from another version"
        )
    addon.load_state_dict(weights)
    return addon


# ------------------------------------------------------------------ save
def save(model: Any, directory: str, *, include_backbone: bool = True) -> None:
    """Write ``model`` to ``directory``: into a temporary sibling first, then swapped into place."""
    out = Path(directory)
    if is_quantized(model.backbone):
        raise SavedModelError(
            "a quantized model is not saved (int8 layers have no float weights to write); save the float model "
            "and quantize when loading: PromptModel.from_pretrained(folder, quantize='int8')"
        )
    adapter = bool(getattr(model.backbone, "peft_config", None))
    if (adapter or not include_backbone) and not model.name_or_path:
        raise SavedModelError(
            "saving without the backbone (include_backbone=False, or a LoRA model, saved as adapters only) "
            "needs the base backbone's name or path, and this model has none; build it with "
            "PromptModel.from_pretrained(...) or pass name_or_path=..."
        )
    include_backbone = include_backbone and not adapter
    with atomic.atomic_dir(out) as staging:  # fsynced, then swapped in whole: never half old, half new
        _write(model, staging, include_backbone, adapter)


def _write(model: Any, out: Path, include_backbone: bool, adapter: bool) -> None:
    if include_backbone:
        model.backbone.save_pretrained(out / "backbone", safe_serialization=True)
        model.tokenizer.save_pretrained(out / "backbone")
    if adapter:
        save_adapter(model.backbone, out / ADAPTER)
    addons = {}
    for role, addon in model.addons.items():
        save_addon(addon, out / "addons" / role)
        addons[role] = f"addons/{role}"
    source = model.name_or_path
    if source and Path(source).exists():
        source = str(Path(source).resolve())  # loadable from any working directory, never mistaken for a hub name
    manifest = {
        "format_version": FORMAT_VERSION,
        "backbone": "backbone" if include_backbone else source,
        "adapter": ADAPTER if adapter else None,
        "addons": addons,
        "head": model.head,
        "options": {
            "calibrate": model.calibrate,
            "combine": model.combine,
            "max_length": model.max_length,
            "batch_size": model.batch_size,
            "max_batch_tokens": model.max_batch_tokens,
            "reuse_prefix": model.prefix_reuse.enabled,
        },
        "calibration": None if model.calibration_ is None else model.calibration_.tolist(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    for name, part in (("template", model.template), ("verbalizer", model.verbalizer)):
        (out / f"{name}.yaml").write_text(yaml.safe_dump(part.to_dict(), sort_keys=False, allow_unicode=True))


# ------------------------------------------------------------------ load
def load(cls, directory: str, *, template=None, verbalizer=None, head=None, dtype=None, device=None, options=None):
    """Load a folder written by :func:`save`; ``template``/``verbalizer``/``options`` override the saved ones."""
    root = Path(directory)
    manifest = _manifest(root)
    overridden = template is not None or verbalizer is not None
    if template is None:
        template = _from_yaml(root / "template.yaml", Template.from_dict)
    if verbalizer is None:
        verbalizer = _from_yaml(root / "verbalizer.yaml", Verbalizer.from_dict)
    source = _backbone_source(root, manifest["backbone"])
    backbone, tokenizer, head = load_backbone(source, head=head or manifest["head"], dtype=dtype)
    if manifest.get("adapter"):
        load_adapter(backbone, root / manifest["adapter"])
    try:
        model = cls(
            backbone, tokenizer, template, verbalizer, head=head, name_or_path=source,
            **{**manifest["options"], **(options or {})},
        )  # fmt: skip
        for folder in manifest["addons"].values():
            model.attach(load_addon(root / folder))
    except SavedModelError:
        raise
    except PromptkitError as err:
        raise SavedModelError(f"{root / MANIFEST}: {err}") from None
    if manifest["calibration"] is not None and not overridden:
        model.calibration_ = _calibration(manifest["calibration"], len(model.verbalizer.labels), root / MANIFEST)
    return model.to(device) if device is not None else model


def _manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise SavedModelError(f"{path} must hold a JSON object, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if version == 1:  # add-ons were top-level folders named after the old attributes
        manifest["addons"] = {name: manifest[name] for name in _V1_ADDONS if manifest.get(name)}
    elif version != FORMAT_VERSION:
        raise SavedModelError(f"{path} has format_version {version!r}; this promptkit reads 1 and {FORMAT_VERSION}")
    required = {"backbone": str, "head": str, "options": dict, "addons": dict}
    for key, kind in required.items():
        if not isinstance(manifest.get(key), kind):
            raise SavedModelError(
                f"{path}: key {key!r} must be a {kind.__name__}, got {manifest.get(key)!r}; the file is damaged"
            )
    manifest.setdefault("calibration", None)
    known = {"calibrate", "combine", "max_length", "batch_size", "max_batch_tokens", "reuse_prefix"}
    unknown = sorted(set(manifest["options"]) - known)
    if unknown:
        raise SavedModelError(f"{path}: unknown options {unknown}; valid are {sorted(known)}")
    return manifest


def _backbone_source(root: Path, saved: str) -> str:
    """Where the backbone comes from: the saved copy, a local folder (absolute), or an alias / hub name."""
    if saved == "backbone":
        if not (root / "backbone").is_dir():
            raise SavedModelError(f"{root / MANIFEST} says the backbone is saved in {root}/backbone, which is missing")
        return str(root / "backbone")
    path = Path(saved)
    if path.is_absolute():
        if not path.is_dir():
            raise SavedModelError(
                f"{root / MANIFEST} refers to the base backbone folder {saved}, which no longer exists; "
                "restore it, or load with a model that includes its backbone"
            )
        return saved
    if path.is_dir():  # a relative path written by an older promptkit
        return str(path.resolve())
    return saved


def _calibration(values: Any, n_labels: int, where: Path) -> torch.Tensor:
    ok = isinstance(values, list) and all(isinstance(v, (int, float)) for v in values)
    if not ok or len(values) != n_labels:
        raise SavedModelError(
            f"{where}: calibration must be a list of {n_labels} numbers (one per label), got {values!r}; "
            "refit it with model.fit_calibration(...) and save again"
        )
    return torch.tensor(values, dtype=torch.float32)


def _from_yaml(path: Path, build) -> Any:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SavedModelError(f"{path} is missing; the saved model is incomplete") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SavedModelError(f"{path} is not valid YAML ({err}); the file is damaged") from None
    try:
        return build(data)
    except PromptkitError as err:
        raise SavedModelError(f"{path}: {err}") from None
