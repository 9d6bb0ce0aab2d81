"""The AutoPrompt trigger add-on and the template's trigger slots.

:class:`TriggerTokens` fills ``{{ trigger(n) }}`` slots with real vocabulary tokens (their
input embeddings), so a found prompt is a list of token ids: saved with the model by
``save_pretrained`` and loaded back by name (``autoprompt_triggers``), with no weights.
"""

from __future__ import annotations

from typing import Any

import torch

from promptkit.addons import AddOn, register_addon
from promptkit.errors import ConfigError, TemplateError
from promptkit.template import Template

EXAMPLE_TEMPLATE = "{{ text }} {{ trigger(5) }} {{ mask }}"


@register_addon("autoprompt_triggers")
class TriggerTokens(AddOn):
    """Fills ``{{ trigger(n) }}`` slots with the input embeddings of fixed vocabulary tokens (no parameters).

    Example:
        >>> TriggerTokens([5, 7]).config()
        {'token_ids': [5, 7]}
    """

    role = "slot_embeddings"

    def __init__(self, token_ids: list[int]) -> None:
        super().__init__()
        if not token_ids or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in token_ids):
            raise ConfigError(f"TriggerTokens needs a non-empty list of token ids (ints >= 0), got {token_ids!r}")
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long))

    def config(self) -> dict[str, Any]:
        return {"token_ids": self.token_ids.tolist()}

    def check(self, model: Any) -> None:
        size = model.backbone.get_input_embeddings().weight.size(0)
        if int(self.token_ids.max()) >= size:
            raise ConfigError(f"trigger token ids {self.token_ids.tolist()} go past the {size} input embeddings")

    def slot_vectors(self, model: Any) -> torch.Tensor:
        return model.backbone.get_input_embeddings().weight[self.token_ids]  # [S, H]


def trigger_sizes(template: Template, example: dict[str, Any]) -> list[int]:
    """Sizes of the template's ``{{ trigger(n) }}`` slots rendered for ``example``, in order.

    Raises:
        TemplateError: no trigger slots, or other (soft) slots the triggers cannot fill.
    """
    slots = [s for s in template.render(example).segments if s.kind == "slot"]
    if not slots or any(s.slot != "trigger" for s in slots):
        found = f"has {sorted({s.slot for s in slots})} slots" if slots else "has no {{ trigger(n) }} slots"
        raise TemplateError(
            f"autoprompt needs a template whose only slots are {{{{ trigger(n) }}}}; {template.name or 'the template'}"
            f" {found}: {template.text!r}. Add trigger positions, e.g. {EXAMPLE_TEMPLATE!r}"
        )
    return [s.size for s in slots]
