"""LoRA through the optional ``peft`` library: settings, injecting adapters, saving and loading them.

Only the adapters are saved (safetensors plus peft's ``adapter_config.json``); a saved
model refers to its base backbone by name or path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from promptkit.errors import BackboneError, ConfigError, SavedModelError
from promptkit.file_readers import read_json, read_safetensors
from promptkit.train_config import config_from_dict


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings.

    Attributes:
        r: adapter rank.
        alpha: scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: names of the modules to adapt; None uses peft's default for
            the architecture (the attention query/value projections).

    Example:
        >>> LoraSettings(r=4, target_modules=["q_proj", "v_proj"]).target_modules
        ('q_proj', 'v_proj')
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.target_modules is not None:
            modules = [self.target_modules] if isinstance(self.target_modules, str) else self.target_modules
            object.__setattr__(self, "target_modules", tuple(modules))
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ConfigError(f"LoraSettings.r={self.r!r} is invalid: expected an int >= 1, e.g. 8")
        if self.alpha <= 0:
            raise ConfigError(f"LoraSettings.alpha={self.alpha!r} is invalid: expected a number > 0, e.g. 16")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoraSettings.dropout={self.dropout!r} is invalid: expected 0 <= dropout < 1")

    @classmethod
    def parse(cls, lora: bool | Mapping[str, Any] | LoraSettings) -> LoraSettings | None:
        """``False`` -> None, ``True`` -> defaults, a mapping -> validated settings."""
        if lora is None or lora is False:
            return None
        if lora is True:
            return cls()
        return lora if isinstance(lora, LoraSettings) else config_from_dict(cls, lora)


def add_lora(backbone: torch.nn.Module, settings: LoraSettings) -> None:
    """Inject LoRA adapters into ``backbone`` in place; only the adapters keep ``requires_grad``."""
    peft = import_peft()
    if getattr(backbone, "peft_config", None):
        raise BackboneError("this backbone already has LoRA adapters; fine-tune it with lora=False to train them")
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules) if settings.target_modules else None,
    )
    try:
        peft.inject_adapter_in_model(config, backbone)
    except ValueError as err:
        raise BackboneError(
            f"cannot add LoRA adapters to {type(backbone).__name__}: {err}. "
            "Name the modules to adapt with lora={'target_modules': [...]}"
        ) from err


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
    settings = read_json(directory / "adapter_config.json")  # a damaged file is named before peft reads it
    weights = read_safetensors(directory / "adapter_model.safetensors")
    if not isinstance(settings, dict):
        raise SavedModelError(f"{directory / 'adapter_config.json'} must hold a JSON object, got {settings!r}")
    peft.inject_adapter_in_model(peft.LoraConfig.from_pretrained(str(directory)), backbone)
    loaded = peft.set_peft_model_state_dict(backbone, weights)
    if loaded.unexpected_keys:
        raise SavedModelError(f"{directory} has adapter weights the backbone lacks: {loaded.unexpected_keys[:5]}")
