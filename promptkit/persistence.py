"""Save and load a :class:`~promptkit.model.PromptModel` without pickle.

A saved folder holds ``promptkit.json`` (options, backbone source, calibration),
``template.yaml`` and ``verbalizer.yaml`` (plain data), and, unless saved without it,
``backbone/`` (the transformers checkpoint as safetensors plus the tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from promptkit.backbones import load_backbone
from promptkit.errors import PromptkitError
from promptkit.template import Template
from promptkit.verbalizer import Verbalizer

MANIFEST = "promptkit.json"
FORMAT_VERSION = 1


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


def save(model, directory: str, *, include_backbone: bool = True) -> None:
    """Write ``model`` to ``directory`` (created if needed)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if not include_backbone and not model.name_or_path:
        raise PromptkitError(
            "include_backbone=False needs the backbone's name or path, and this model has none; "
            "save with include_backbone=True"
        )
    if include_backbone:
        model.backbone.save_pretrained(out / "backbone", safe_serialization=True)
        model.tokenizer.save_pretrained(out / "backbone")
    manifest = {
        "format_version": FORMAT_VERSION,
        "backbone": "backbone" if include_backbone else model.name_or_path,
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
    model = cls(
        backbone, tokenizer, template, verbalizer, head=head, name_or_path=source, **{**manifest["options"], **options}
    )
    if manifest["calibration"] is not None and not overridden:
        model.calibration_ = torch.tensor(manifest["calibration"])
    return model.to(device) if device is not None else model
