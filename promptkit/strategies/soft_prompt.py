"""Soft prompts: trainable continuous prompt vectors at ``{{ soft(n) }}`` slots, backbone frozen.

``encoder="none"`` is prompt tuning (Lester et al., 2021): the ``S`` slot vectors are
the parameters. ``"lstm"`` and ``"mlp"`` are P-tuning (Liu et al., 2021): the vectors
come out of a small encoder over ``S`` learned inputs. Only that module trains, through
the one training loop; a model saved with ``include_backbone=False`` is then a few
kilobytes plus a reference to its backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from promptkit.errors import StrategyError, TemplateError, check_choice
from promptkit.losses import Loss
from promptkit.model import PromptModel
from promptkit.prompt_encoders import ENCODERS
from promptkit.soft_verbalizer import SoftVerbalizer
from promptkit.strategies.base import TrainedStrategy
from promptkit.strategies.registry import register
from promptkit.template import Template
from promptkit.train_config import TrainConfig

Encoder = Literal["none", "lstm", "mlp"]
Init = Literal["vocab", "random"]
DEFAULT_LEARNING_RATE = 3e-2  # soft prompts need far higher rates than fine-tuning (Lester et al. used 0.3)
EXAMPLE_TEMPLATE = "{{ soft(20) }} {{ text }} It was {{ mask }}"


def soft_slot_count(template: Template, example: Mapping[str, Any]) -> int:
    """Number of ``{{ soft(n) }}`` positions the template renders for ``example``.

    Raises:
        TemplateError: the template has no soft slots, or also has ``{{ trigger(n) }}`` slots.

    Example:
        >>> soft_slot_count(Template("{{ soft(4) }} {{ text }} It was {{ mask }}"), {"text": "ok"})
        4
    """
    slots = [s for s in template.render(example).segments if s.kind == "slot"]
    kinds = sorted({s.slot for s in slots})
    if kinds != ["soft"]:
        found = f"has {kinds} slots only" if slots else "has no {{ soft(n) }} slots"
        raise TemplateError(
            f"soft_prompt needs a template whose only slots are {{{{ soft(n) }}}}; {template.name or 'the template'}"
            f" {found}: {template.text!r}. Add soft prompt positions, e.g. {EXAMPLE_TEMPLATE!r}"
        )
    return sum(s.size for s in slots)


def init_token_ids(model: PromptModel, n_tokens: int, init_words: str | None, seed: int) -> list[int]:
    """``n_tokens`` vocabulary ids to start trainable prompts from (soft prompts, prefixes).

    The tokens of ``init_words``, repeated or cut to ``n_tokens``; without words, distinct
    non-special tokens drawn with ``seed``.
    """
    if init_words is not None:
        ids = model.tokenizer(init_words, add_special_tokens=False)["input_ids"]
        if not ids:
            raise StrategyError(f"init_words={init_words!r} has no tokens; pass words such as 'Classify the review'")
        return (ids * -(-n_tokens // len(ids)))[:n_tokens]  # repeat, then truncate
    special = torch.tensor(sorted(set(model.tokenizer.all_special_ids)), dtype=torch.long)
    pool = torch.arange(min(len(model.tokenizer), model.backbone.get_input_embeddings().weight.size(0)))
    pool = pool[~torch.isin(pool, special)]
    generator = torch.Generator().manual_seed(seed)
    return pool[torch.randperm(len(pool), generator=generator)[:n_tokens]].tolist()


def initial_vectors(model: PromptModel, n_tokens: int, init: Init, init_words: str | None, seed: int) -> torch.Tensor:
    """``[S, H]`` starting vectors: embeddings of seeded random tokens or of ``init_words``, or N(0, std)."""
    weight = model.backbone.get_input_embeddings().weight.detach().float().cpu()  # [V, H]
    if init == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(n_tokens, weight.size(1), generator=generator) * weight.std()
    return weight[init_token_ids(model, n_tokens, init_words, seed)].clone()


@register("soft_prompt")
class SoftPrompt(TrainedStrategy):
    """Train continuous prompt vectors at the template's ``{{ soft(n) }}`` slots; the backbone stays frozen.

    Args:
        config: a :class:`~promptkit.train_config.TrainConfig` or a mapping of its fields;
            learning rate 3e-2 unless it sets one.
        encoder: ``"none"`` (prompt tuning), ``"lstm"`` (P-tuning: bi-LSTM + MLP) or
            ``"mlp"`` (P-tuning with a residual MLP).
        init: ``"vocab"`` starts from embeddings of vocabulary tokens (random ones drawn with
            ``seed``, or those of ``init_words``); ``"random"`` from a normal with the
            embedding matrix's standard deviation.
        init_words: text whose tokens, repeated or cut to ``S``, start the vectors (``init="vocab"``).
        seed: seeds the initial vectors and encoder weights.
        soft_verbalizer: also train label vectors in place of the label words' output
            embeddings (WARP-style :class:`~promptkit.soft_verbalizer.SoftVerbalizer`,
            started from the words' embeddings).
        loss: the training loss (:mod:`promptkit.losses`); None is cross-entropy.

    Example:
        >>> template = Template("{{ soft(20) }} {{ text }} It was {{ mask }}")  # doctest: +SKIP
        >>> model = PromptModel.from_pretrained("smollm2-135m", template=template, verbalizer=v)  # doctest: +SKIP
        >>> strategy = get_strategy("soft_prompt", encoder="mlp", config={"max_steps": 200})  # doctest: +SKIP
        >>> model = strategy.fit(model, train)  # doctest: +SKIP
        >>> model.save_pretrained("sst2-soft", include_backbone=False)  # doctest: +SKIP
    """

    default_learning_rate = DEFAULT_LEARNING_RATE

    def __init__(
        self,
        config: TrainConfig | Mapping[str, Any] | None = None,
        encoder: Encoder = "none",
        init: Init = "vocab",
        init_words: str | None = None,
        seed: int = 0,
        soft_verbalizer: bool = False,
        loss: Loss | None = None,
    ) -> None:
        check_choice("soft_prompt encoder", encoder, tuple(ENCODERS), StrategyError)
        check_choice("soft_prompt init", init, ("vocab", "random"), StrategyError)
        if init_words is not None and init != "vocab":
            raise StrategyError(f"init_words={init_words!r} needs init='vocab', got init={init!r}")
        super().__init__(config, loss)
        self.encoder, self.init, self.init_words, self.seed = encoder, init, init_words, seed
        self.soft_verbalizer = soft_verbalizer

    def build(self, model: PromptModel, n_tokens: int) -> torch.nn.Module:
        """A new, seeded slot-vector module of ``n_tokens`` x the backbone's embedding size."""
        hidden = model.backbone.get_input_embeddings().weight.size(1)
        with torch.random.fork_rng(devices=[]):  # seeded encoder weights; the global RNG is left alone
            torch.manual_seed(self.seed)
            module = ENCODERS[self.encoder](n_tokens, hidden)
        with torch.no_grad():
            module.prompt.copy_(initial_vectors(model, n_tokens, self.init, self.init_words, self.seed))
        return module.to(model.device)

    def prepare(self, model: PromptModel, rows: list[dict[str, Any]]) -> None:
        """Freeze the backbone; attach new slot vectors (and a soft verbalizer if asked)."""
        n_tokens = soft_slot_count(model.template, rows[0])
        model.backbone.requires_grad_(False)
        model.attach(self.build(model, n_tokens))
        if self.soft_verbalizer:
            model.attach(SoftVerbalizer.from_model(model))
        else:
            model.detach(SoftVerbalizer.role)
