"""Save and load a :class:`~promptkit.model.PromptModel` without pickle.

A saved folder holds ``promptkit.json`` (options, backbone source, calibration),
``template.yaml`` and ``verbalizer.yaml`` (plain data), and, unless saved without it,
``backbone/`` (the transformers checkpoint as safetensors plus the tokenizer). A backbone
with LoRA adapters (``peft``) is saved as ``adapter/`` (adapter weights as safetensors plus
``adapter_config.json``) and a reference to its base backbone, never the full weights.
Trainable add-on modules, ``slot_embeddings`` (soft prompts), ``label_head`` (soft
verbalizer) and ``prefix`` (prefix tuning), are kept in folders of those names: the module's registered type and
``config()`` as JSON, its weights as safetensors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from promptkit._registry import add_to_registry
from promptkit.backbones import load_backbone
from promptkit.errors import BackboneError, PromptkitError
from promptkit.template import Template
from promptkit.verbalizer import Verbalizer

MANIFEST = "promptkit.json"
FORMAT_VERSION = 1
ADAPTER = "adapter"
MODULES = ("slot_embeddings", "label_head", "prefix")  # PromptModel attributes holding registered modules
_REGISTERED: dict[str, type] = {}


def is_saved_model(path: str) -> bool:
    """Whether ``path`` is a folder written by :func:`save`."""
    return (Path(path) / MANIFEST).is_file()


def template_to_dict(template: Template) -> dict[str, Any]:
    data = {"name": template.name, "text": template.text, "chat": template.chat}
    if template.example is not None:
        data["example"] = dict(template.example)
    return data


def verbalizer_to_dict(verbalizer: Verbalizer) -> dict[str, Any]:
    return {"name": verbalizer.name, "label_words": {k: list(v) for k, v in verbalizer.label_words.items()}}


def import_peft():
    """The optional ``peft`` module, or an error with the command that installs it."""
    try:
        import peft
    except ImportError:
        raise BackboneError(
            "LoRA needs the optional dependency peft, which is not installed. "
            "Install it with: pip install 'promptkit[lora]'  (or: pip install 'peft>=0.13')"
        ) from None
    return peft


def save_adapter(backbone: torch.nn.Module, directory: Path) -> None:
    """Write the backbone's LoRA adapter weights (safetensors) and settings (JSON)."""
    peft = import_peft()
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in peft.get_peft_model_state_dict(backbone).items()}
    save_file(weights, str(directory / "adapter_model.safetensors"))
    backbone.peft_config["default"].save_pretrained(str(directory))


def load_adapter(backbone: torch.nn.Module, directory: Path) -> None:
    """Inject the adapters saved by :func:`save_adapter` into ``backbone`` (in place)."""
    peft = import_peft()
    peft.inject_adapter_in_model(peft.LoraConfig.from_pretrained(str(directory)), backbone)
    loaded = peft.set_peft_model_state_dict(backbone, load_file(str(directory / "adapter_model.safetensors")))
    if loaded.unexpected_keys:
        raise PromptkitError(f"{directory} has adapter weights the backbone lacks: {loaded.unexpected_keys[:5]}")


def register_module(name: str) -> Callable[[type], type]:
    """Class decorator: save and load this add-on module type (``slot_embeddings``, ``label_head``) as ``name``.

    The class needs ``config() -> dict`` (JSON-ready) and ``from_config(dict)`` (a classmethod).

    Example:
        >>> @register_module("fixed_vectors")  # doctest: +SKIP
        ... class FixedVectors(torch.nn.Module): ...
    """

    def decorate(cls: type) -> type:
        add_to_registry(_REGISTERED, name, cls, "module", PromptkitError)
        cls.module_type = name
        return cls

    return decorate


def save_module(module: torch.nn.Module, directory: Path) -> None:
    """Write a registered add-on module: ``config.json`` (type + config) and ``model.safetensors``."""
    name = getattr(type(module), "module_type", None)
    if _REGISTERED.get(name) is not type(module):
        raise PromptkitError(
            f"cannot save {directory.name} of type {type(module).__name__}: it is not registered; decorate the "
            "class with @promptkit.persistence.register_module('name') and give it config()/from_config()"
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"type": name, "config": module.config()}, indent=2))
    weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(weights, str(directory / "model.safetensors"))


def load_module(directory: Path) -> torch.nn.Module:
    """Rebuild the module written by :func:`save_module`."""
    saved = json.loads((directory / "config.json").read_text())
    if saved["type"] not in _REGISTERED:
        raise PromptkitError(
            f"{directory} holds a module of unknown type {saved['type']!r}; registered types are "
            f"{sorted(_REGISTERED)}. Import the module that registers it before loading"
        )
    module = _REGISTERED[saved["type"]].from_config(saved["config"])
    module.load_state_dict(load_file(str(directory / "model.safetensors")))
    return module


def save(model, directory: str, *, include_backbone: bool = True) -> None:
    """Write ``model`` to ``directory`` (created if needed)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    adapter = bool(getattr(model.backbone, "peft_config", None))
    if (adapter or not include_backbone) and not model.name_or_path:
        raise PromptkitError(
            "saving without the backbone (include_backbone=False, or a LoRA model, saved as adapters only) "
            "needs the base backbone's name or path, and this model has none; build it with "
            "PromptModel.from_pretrained(...) or pass name_or_path=..."
        )
    include_backbone = include_backbone and not adapter
    if include_backbone:
        model.backbone.save_pretrained(out / "backbone", safe_serialization=True)
        model.tokenizer.save_pretrained(out / "backbone")
    if adapter:
        save_adapter(model.backbone, out / ADAPTER)
    modules = {name: getattr(model, name) for name in MODULES if getattr(model, name) is not None}
    for name, module in modules.items():
        save_module(module, out / name)
    manifest = {
        "format_version": FORMAT_VERSION,
        "backbone": "backbone" if include_backbone else model.name_or_path,
        "adapter": ADAPTER if adapter else None,
        **{name: name if name in modules else None for name in MODULES},
        "head": model.head,
        "options": {
            "calibrate": model.calibrate,
            "combine": model.combine,
            "max_length": model.max_length,
            "batch_size": model.batch_size,
        },
        "calibration": None if model.calibration_ is None else model.calibration_.tolist(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    (out / "template.yaml").write_text(yaml.safe_dump(template_to_dict(model.template), sort_keys=False))
    (out / "verbalizer.yaml").write_text(yaml.safe_dump(verbalizer_to_dict(model.verbalizer), sort_keys=False))


def load(cls, directory: str, *, template=None, verbalizer=None, dtype=None, device=None, **options):
    """Load a folder written by :func:`save`; ``template``/``verbalizer``/options override the saved ones."""
    root = Path(directory)
    manifest = json.loads((root / MANIFEST).read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PromptkitError(
            f"{root} was saved in format {manifest.get('format_version')}; this promptkit reads {FORMAT_VERSION}"
        )
    overridden = template is not None or verbalizer is not None
    if template is None:
        template = Template(**yaml.safe_load((root / "template.yaml").read_text()))
    if verbalizer is None:
        verbalizer = Verbalizer(**yaml.safe_load((root / "verbalizer.yaml").read_text()))
    source = str(root / manifest["backbone"]) if (root / manifest["backbone"]).is_dir() else manifest["backbone"]
    backbone, tokenizer, head = load_backbone(source, head=manifest["head"], dtype=dtype)
    if manifest.get("adapter"):
        load_adapter(backbone, root / manifest["adapter"])
    model = cls(
        backbone, tokenizer, template, verbalizer, head=head, name_or_path=source, **{**manifest["options"], **options}
    )
    for name in MODULES:
        if manifest.get(name):
            setattr(model, name, load_module(root / manifest[name]).to(model.device))
    if manifest["calibration"] is not None and not overridden:
        model.calibration_ = torch.tensor(manifest["calibration"])
    return model.to(device) if device is not None else model
