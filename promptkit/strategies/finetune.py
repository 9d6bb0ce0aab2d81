"""Prompt-based fine-tuning (LM-BFF): cross-entropy over the verbalizer's label scores.

Few-shot and full-data fine-tuning are the same strategy with different data. With
``lora=...`` only low-rank adapters (via the optional ``peft`` library) are trained; a
saved model then holds the adapters plus a reference to its base backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from promptkit.errors import BackboneError, ConfigError
from promptkit.model import PromptModel
from promptkit.persistence import import_peft
from promptkit.strategies.registry import register
from promptkit.train import train as train_model
from promptkit.train_config import TrainConfig, TrainResult, config_from_dict


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


@register("finetune")
class Finetune:
    """Fine-tune the backbone on the prompt's label scores (all weights, or LoRA adapters).

    Args:
        config: a :class:`~promptkit.train.TrainConfig` or a mapping of its fields.
        lora: False (train every weight), True (LoRA with default settings), or a
            mapping / :class:`LoraSettings` with ``r``, ``alpha``, ``dropout``, ``target_modules``.
        freeze_embeddings: keep the token embeddings fixed (with tied weights, the output
            rows of the label words too). A few dozen examples otherwise move the label
            words' rows and the training texts' word vectors fastest, which overfits.

    Example:
        >>> strategy = get_strategy("finetune", config={"learning_rate": 1e-3}, lora={"r": 4})  # doctest: +SKIP
        >>> model = strategy.fit(model, train_examples)  # doctest: +SKIP
        >>> strategy.result_.losses[-1]  # doctest: +SKIP
    """

    def __init__(
        self,
        config: TrainConfig | Mapping[str, Any] | None = None,
        lora: bool | Mapping[str, Any] = False,
        freeze_embeddings: bool = False,
    ) -> None:
        self.config = TrainConfig.coerce(config)
        self.lora = LoraSettings.parse(lora)
        self.freeze_embeddings = freeze_embeddings
        self.result_: TrainResult | None = None

    def __repr__(self) -> str:
        return f"Finetune(config={self.config!r}, lora={self.lora!r}, freeze_embeddings={self.freeze_embeddings})"

    def fit(
        self,
        model: PromptModel,
        train: Any,
        unlabeled: Any = None,
        *,
        dev: Any = None,
        resume_from: str | Path | None = None,
    ) -> PromptModel:
        """Train ``model`` in place and return it; ``unlabeled`` only refits a ``"batch"`` calibration prior."""
        if self.lora is not None:
            set_seed(self.config.seed)  # adapter initialisation is random
            add_lora(model.backbone, self.lora)
        if self.freeze_embeddings:
            model.backbone.get_input_embeddings().weight.requires_grad_(False)
        self.result_ = train_model(model, train, self.config, dev=dev, resume_from=resume_from)
        model.refit_calibration(unlabeled)
        return model
