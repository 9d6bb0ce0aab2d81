"""Prefix tuning / P-tuning v2: trainable key/value vectors in front of every attention layer.

Prompt tuning (:mod:`promptkit.prompt_encoders`) changes only the input embeddings, and
its effect fades through a frozen deep model. Prefix tuning (Li & Liang, 2021) and
P-tuning v2 (Liu et al., 2022) give every layer ``n`` extra key/value pairs that all
real tokens attend to. For a causal LM these are exactly a key/value cache holding
``n`` earlier tokens, so :class:`~promptkit.model.PromptModel` hands the backbone a
fresh cache filled from :class:`PrefixTuning` on every forward pass and widens the
attention mask by ``n``: no model class is patched, and the head-only scoring, the
label words and the training loop stay as they are.

Masked LMs (BERT family) take no key/value cache in their encoder, so prefixes are
for causal LMs only; :func:`prefix_shape` says so.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import DynamicCache

from promptkit.addons import AddOn, register_addon
from promptkit.errors import BackboneError, ConfigError


def prefix_shape(backbone: torch.nn.Module) -> dict[str, int]:
    """``n_layers``, ``n_kv_heads`` and ``head_dim`` of a causal LM's attention cache.

    Raises:
        BackboneError: the backbone is not a causal LM (no key/value cache to prefix).
    """
    if not backbone.can_generate():
        raise BackboneError(
            f"prefix tuning needs a causal LM (it fills the key/value cache), and {type(backbone).__name__} is a "
            "masked LM; for masked LMs use soft prompts at {{ soft(n) }} slots (get_strategy('soft_prompt'))"
        )
    config = backbone.config.get_text_config()
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return {"n_layers": config.num_hidden_layers, "n_kv_heads": kv_heads, "head_dim": head_dim}


def cache_argument(backbone: torch.nn.Module) -> str:
    """The forward keyword that takes a key/value cache: ``cache`` (newer transformers) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


@register_addon("prefix_tuning")
class PrefixTuning(AddOn):
    """Per-layer prefix keys and values, ``[n_layers, n_kv_heads, n_tokens, head_dim]`` each.

    The add-on of role ``"prefix"``: it hands the backbone a cache holding the prefix and
    widens the attention mask by ``n_tokens`` on every forward pass. Keys are stored as the attention layer caches them
    (after any rotary embedding), so they are free vectors the layer attends to.

    Example:
        >>> prefix = PrefixTuning(n_tokens=4, n_layers=2, n_kv_heads=2, head_dim=8)
        >>> prefix.cache(batch_size=3, config=None).layers[0].keys.shape
        torch.Size([3, 2, 4, 8])
    """

    role = "prefix"

    def __init__(self, n_tokens: int, n_layers: int, n_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.n_tokens, self.n_layers, self.n_kv_heads, self.head_dim = n_tokens, n_layers, n_kv_heads, head_dim
        shape = (n_layers, n_kv_heads, n_tokens, head_dim)
        self.keys = torch.nn.Parameter(torch.zeros(shape))
        self.values = torch.nn.Parameter(torch.zeros(shape))

    def cache(self, batch_size: int, config: Any, dtype: torch.dtype | None = None) -> DynamicCache:
        """A new cache holding the prefix for ``batch_size`` rows (built per forward pass: gradients reach it)."""
        cache = DynamicCache(config=config) if config is not None else DynamicCache()
        for layer in range(self.n_layers):
            keys = self.keys[layer].to(dtype or self.keys.dtype).expand(batch_size, -1, -1, -1)  # [R, kv, n, d]
            values = self.values[layer].to(dtype or self.values.dtype).expand(batch_size, -1, -1, -1)
            cache.update(keys, values, layer)
        return cache

    @torch.no_grad()
    def init_from_tokens(self, backbone: torch.nn.Module, token_ids: list[int]) -> None:
        """Start from the keys and values ``backbone`` itself computes for ``token_ids`` (``n_tokens`` of them).

        Li & Liang found prefixes started from real words' activations train faster and
        more stably than random ones: they begin on the scale the layers expect.
        """
        if len(token_ids) != self.n_tokens:
            raise ConfigError(f"need {self.n_tokens} token ids to start the prefix from, got {len(token_ids)}")
        cache = DynamicCache(config=backbone.config)
        ids = torch.tensor([token_ids], device=next(backbone.parameters()).device)
        backbone(input_ids=ids, use_cache=True, **{cache_argument(backbone): cache})
        for layer in range(self.n_layers):
            self.keys[layer].copy_(cache.layers[layer].keys[0].float())
            self.values[layer].copy_(cache.layers[layer].values[0].float())

    def config(self) -> dict[str, Any]:
        return {"n_tokens": self.n_tokens, "n_layers": self.n_layers, "n_kv_heads": self.n_kv_heads,
                "head_dim": self.head_dim}  # fmt: skip

    def check(self, model: Any) -> None:
        expected = prefix_shape(model.backbone)
        found = {"n_layers": self.n_layers, "n_kv_heads": self.n_kv_heads, "head_dim": self.head_dim}
        if found != expected:
            raise BackboneError(f"the prefix was made for attention shape {found}, the backbone has {expected}")

    def backbone_inputs(self, model: Any, batch: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        mask = inputs["attention_mask"]  # [R, T]
        cache = self.cache(mask.size(0), model.backbone.config, model.backbone.dtype)
        widened = torch.cat([mask.new_ones(mask.size(0), self.n_tokens), mask], dim=1)  # [R, n + T]
        return {**inputs, "attention_mask": widened, cache_argument(model.backbone): cache}

    def extra_repr(self) -> str:
        return f"n_tokens={self.n_tokens}, n_layers={self.n_layers}, n_kv_heads={self.n_kv_heads}"
