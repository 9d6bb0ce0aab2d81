"""Prompt-based fine-tuning (LM-BFF): cross-entropy over the verbalizer's label scores.

Few-shot and full-data fine-tuning are the same strategy with different data. With
``lora=...`` only low-rank adapters (via the optional ``peft`` library) are trained; a
saved model then holds the adapters plus a reference to its base backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from accelerate.utils import set_seed

from promptkit.lora import LoraSettings, add_lora
from promptkit.losses import Loss
from promptkit.model import PromptModel
from promptkit.strategies.base import TrainedStrategy
from promptkit.strategies.registry import register
from promptkit.train_config import TrainConfig


@register("finetune")
class Finetune(TrainedStrategy):
    """Fine-tune the backbone on the prompt's label scores (all weights, or LoRA adapters).

    Args:
        config: a :class:`~promptkit.train_config.TrainConfig` or a mapping of its fields;
            learning rate 1e-5 unless it sets one.
        lora: False (train every weight), True (LoRA with default settings), or a
            mapping / :class:`LoraSettings` with ``r``, ``alpha``, ``dropout``, ``target_modules``.
        freeze_embeddings: keep the token embeddings fixed (with tied weights, the output
            rows of the label words too). A few dozen examples otherwise move the label
            words' rows and the training texts' word vectors fastest, which overfits.
        loss: the training loss (:mod:`promptkit.losses`); None is cross-entropy.

    Example:
        >>> strategy = get_strategy("finetune", config={"learning_rate": 1e-3}, lora={"r": 4})  # doctest: +SKIP
        >>> model = strategy.fit(model, train_examples)  # doctest: +SKIP
        >>> strategy.result_.losses[-1]  # doctest: +SKIP
    """

    default_learning_rate = 1e-5

    def __init__(
        self,
        config: TrainConfig | Mapping[str, Any] | None = None,
        lora: bool | Mapping[str, Any] | LoraSettings = False,
        freeze_embeddings: bool = False,
        loss: Loss | None = None,
    ) -> None:
        super().__init__(config, loss)
        self.lora = LoraSettings.parse(lora)
        self.freeze_embeddings = freeze_embeddings

    def prepare(self, model: PromptModel, rows: list[dict[str, Any]]) -> None:
        """Add LoRA adapters (seeded) or keep every weight trainable; optionally freeze the embeddings."""
        if self.lora is not None:
            set_seed(self.config.seed)  # adapter initialisation is random
            add_lora(model.backbone, self.lora)
        if self.freeze_embeddings:
            model.backbone.get_input_embeddings().weight.requires_grad_(False)
