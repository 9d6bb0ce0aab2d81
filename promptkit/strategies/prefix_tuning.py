"""Prefix tuning / P-tuning v2: per-layer key/value prefixes trained with a frozen causal LM.

The template needs no slot: the prefix sits in front of every prompt, at every layer
(:mod:`promptkit.prefix` says how). Only the prefix trains, through the one training
loop; a model saved with ``include_backbone=False`` is the prefix plus a reference to
its backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from promptkit.errors import DataError
from promptkit.examples import as_examples
from promptkit.model import PromptModel
from promptkit.prefix import PrefixTuning, prefix_shape
from promptkit.strategies.registry import StrategyError, register
from promptkit.strategies.soft_prompt import init_token_ids
from promptkit.train import train as train_model
from promptkit.train_config import TrainConfig, TrainResult

Init = Literal["vocab", "random"]
DEFAULT_LEARNING_RATE = 1e-2  # P-tuning v2 trains prefixes at 5e-3 to 1e-2


@register("prefix_tuning")
class PrefixTuningStrategy:
    """Train ``n_tokens`` key/value pairs per attention layer; the backbone stays frozen.

    Args:
        config: a :class:`~promptkit.train.TrainConfig` or a mapping of its fields; a mapping
            (or None) without ``learning_rate`` gets 1e-2.
        n_tokens: prefix length (key/value pairs per layer).
        init: ``"vocab"`` starts from the keys and values the backbone computes for
            ``n_tokens`` vocabulary tokens (drawn with ``seed``, or those of ``init_words``);
            ``"random"`` from a normal with standard deviation 0.02 (Li & Liang's weaker start).
        init_words: text whose tokens, repeated or cut to ``n_tokens``, start the prefix.
        seed: seeds the initial prefix.

    Example:
        >>> strategy = get_strategy("prefix_tuning", n_tokens=16, config={"max_steps": 200})  # doctest: +SKIP
        >>> model = strategy.fit(model, train)  # doctest: +SKIP
        >>> model.save_pretrained("sst2-prefix", include_backbone=False)  # doctest: +SKIP
    """

    def __init__(
        self,
        config: TrainConfig | Mapping[str, Any] | None = None,
        n_tokens: int = 16,
        init: Init = "vocab",
        init_words: str | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or n_tokens < 1:
            raise StrategyError(f"invalid prefix_tuning n_tokens={n_tokens!r}; expected an int >= 1, e.g. 16")
        if init not in ("vocab", "random"):
            raise StrategyError(f"invalid prefix_tuning init={init!r}; valid are ['vocab', 'random']")
        if init_words is not None and init != "vocab":
            raise StrategyError(f"init_words={init_words!r} needs init='vocab', got init={init!r}")
        self.config = TrainConfig.coerce(config, learning_rate=DEFAULT_LEARNING_RATE)
        self.n_tokens, self.init, self.init_words, self.seed = n_tokens, init, init_words, seed
        self.result_: TrainResult | None = None

    def __repr__(self) -> str:
        return (
            f"PrefixTuningStrategy(config={self.config!r}, n_tokens={self.n_tokens}, init={self.init!r}, "
            f"init_words={self.init_words!r}, seed={self.seed})"
        )

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

    def fit(
        self,
        model: PromptModel,
        train: Any,
        unlabeled: Any = None,
        *,
        dev: Any = None,
        resume_from: str | Path | None = None,
    ) -> PromptModel:
        """Freeze the backbone, give it a new prefix, train the prefix; ``unlabeled`` only refits a batch prior."""
        rows = as_examples(train)
        if not rows:
            raise DataError("cannot train on an empty training set; pass at least one labelled example")
        prefix = self.build(model)
        model.backbone.requires_grad_(False)
        model.prefix = prefix
        self.result_ = train_model(model, rows, self.config, dev=dev, resume_from=resume_from)
        model.refit_calibration(unlabeled)
        return model
