"""Validation of :class:`~promptkit.model.PromptModel`'s options: each bad value is named with the fix."""

from __future__ import annotations

from typing import Any

import torch

from promptkit.backbones import HeadKind
from promptkit.errors import ConfigError, check_choice

DEFAULT_MAX_LENGTH = 512


def check_int(name: str, value: Any, low: int) -> None:
    """``value`` must be a real int (not a bool, float or str) >= ``low``."""
    if type(value) is not int or value < low:
        raise ConfigError(f"PromptModel {name}={value!r} is invalid: expected an int >= {low}, e.g. {max(low, 32)}")


def as_kind(value: Any, kind: type) -> Any:
    """``value`` if it is a ``kind`` (Template, Verbalizer), else an error naming both types."""
    if not isinstance(value, kind):
        raise ConfigError(f"expected a promptkit {kind.__name__}, got {type(value).__name__}")
    return value


def checked_head(backbone: torch.nn.Module, head: Any) -> HeadKind:
    """The backbone's head kind; a given ``head`` must be a valid choice and match the backbone."""
    actual = "causal" if backbone.can_generate() else "mlm"
    if head is None:
        return actual
    check_choice("head", head, ("mlm", "causal"))
    if head != actual:
        raise ConfigError(
            f"head={head!r} does not match the backbone: {type(backbone).__name__} is a "
            f"{'causal' if actual == 'causal' else 'masked'} LM (head={actual!r}); leave head=None to detect it"
        )
    return head


def checked_max_length(backbone: torch.nn.Module, max_length: Any) -> int:
    """``max_length`` checked against the backbone's position limit; None is 512 or that limit if smaller."""
    config = backbone.config.get_text_config() if hasattr(backbone.config, "get_text_config") else backbone.config
    limit = getattr(config, "max_position_embeddings", None)
    limit = limit if isinstance(limit, int) and limit > 0 else None
    if max_length is None:
        return min(DEFAULT_MAX_LENGTH, limit or DEFAULT_MAX_LENGTH)
    check_int("max_length", max_length, 8)
    if limit is not None and max_length > limit:
        raise ConfigError(
            f"PromptModel max_length={max_length} exceeds the backbone's {limit} positions "
            f"(config.max_position_embeddings); use max_length <= {limit}"
        )
    return max_length
