"""Prefix tuning / P-tuning v2: per-layer key/value prefixes trained with a frozen causal LM.

The template needs no slot: the prefix sits in front of every prompt, at every layer
(:mod:`promptkit.prefix` says how). Only the prefix trains, through the one training
loop; a model saved with ``include_backbone=False`` is the prefix plus a reference to
its backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from promptkit.errors import StrategyError, check_choice
from promptkit.losses import Loss
from promptkit.model import PromptModel
from promptkit.prefix import PrefixTuning, prefix_shape
from promptkit.strategies.base import TrainedStrategy
from promptkit.strategies.registry import register
from promptkit.strategies.soft_prompt import init_token_ids
from promptkit.train_config import TrainConfig

Init = Literal["vocab", "random"]
DEFAULT_LEARNING_RATE = 1e-2  # P-tuning v2 trains prefixes at 5e-3 to 1e-2


@register("prefix_tuning")
class PrefixTuningStrategy(TrainedStrategy):
    """Train ``n_tokens`` key/value pairs per attention layer; the backbone stays frozen.

    Args:
        config: a :class:`~promptkit.train_config.TrainConfig` or a mapping of its fields;
            learning rate 1e-2 unless it sets one.
        n_tokens: prefix length (key/value pairs per layer).
        init: ``"vocab"`` starts from the keys and values the backbone computes for
            ``n_tokens`` vocabulary tokens (drawn with ``seed``, or those of ``init_words``);
            ``"random"`` from a normal with standard deviation 0.02 (Li & Liang's weaker start).
        init_words: text whose tokens, repeated or cut to ``n_tokens``, start the prefix.
        seed: seeds the initial prefix.
        loss: the training loss (:mod:`promptkit.losses`); None is cross-entropy.

    Example:
        >>> strategy = get_strategy("prefix_tuning", n_tokens=16, config={"max_steps": 200})  # doctest: +SKIP
        >>> model = strategy.fit(model, train)  # doctest: +SKIP
        >>> model.save_pretrained("sst2-prefix", include_backbone=False)  # doctest: +SKIP
    """

    default_learning_rate = DEFAULT_LEARNING_RATE

    def __init__(
        self,
        config: TrainConfig | Mapping[str, Any] | None = None,
        n_tokens: int = 16,
        init: Init = "vocab",
        init_words: str | None = None,
        seed: int = 0,
        loss: Loss | None = None,
    ) -> None:
        if not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or n_tokens < 1:
            raise StrategyError(f"invalid prefix_tuning n_tokens={n_tokens!r}; expected an int >= 1, e.g. 16")
        check_choice("prefix_tuning init", init, ("vocab", "random"), StrategyError)
        if init_words is not None and init != "vocab":
            raise StrategyError(f"init_words={init_words!r} needs init='vocab', got init={init!r}")
        super().__init__(config, loss)
        self.n_tokens, self.init, self.init_words, self.seed = n_tokens, init, init_words, seed

    def build(self, model: PromptModel) -> PrefixTuning:
        """A new, seeded prefix for ``model``'s backbone."""
        prefix = PrefixTuning(self.n_tokens, **prefix_shape(model.backbone))
        if self.init == "random":
            generator = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                prefix.keys.normal_(0.0, 0.02, generator=generator)
                prefix.values.normal_(0.0, 0.02, generator=generator)
        else:
            ids = init_token_ids(model, self.n_tokens, self.init_words, self.seed)
            prefix.to(model.device).init_from_tokens(model.backbone, ids)
        return prefix.to(model.device)

    def prepare(self, model: PromptModel, rows: list[dict[str, Any]]) -> None:
        """Freeze the backbone and attach a new prefix."""
        prefix = self.build(model)
        model.backbone.requires_grad_(False)
        model.attach(prefix)
