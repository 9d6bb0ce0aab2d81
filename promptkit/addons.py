"""Add-ons: trainable modules a strategy attaches to a :class:`~promptkit.model.PromptModel` by role.

A strategy changes what the model computes by attaching an :class:`AddOn`, never by
editing :mod:`promptkit.model` or :mod:`promptkit.persistence`. Each add-on has a
``role`` (one add-on per role on a model) and overrides the hooks it needs:

- :meth:`AddOn.slot_vectors`: ``[S, H]`` input vectors for the template's
  ``{{ soft(n) }}`` / ``{{ trigger(n) }}`` slots (soft prompts, AutoPrompt triggers);
- :meth:`AddOn.backbone_inputs`: change the keyword arguments the backbone is called
  with (prefix tuning adds a key/value cache and widens the attention mask);
- :meth:`AddOn.label_scores`: replace the label-word scores with its own (a soft
  verbalizer scores trainable label vectors).

The model calls the hooks in role-name order. A new kind of add-on is one subclass
with ``@register_addon("type-name")``: the registry lets a saved model load it back by
name (its ``config()`` as JSON, its weights as safetensors).

Example:
    >>> @register_addon("doc_bias")
    ... class LabelBias(AddOn):
    ...     role = "label_bias"
    ...     def __init__(self, n_labels: int) -> None:
    ...         super().__init__()
    ...         self.bias = torch.nn.Parameter(torch.zeros(n_labels))
    ...     def config(self): return {"n_labels": len(self.bias)}
    ...     def label_scores(self, model, batch, scores, features):
    ...         return scores + self.bias
    >>> LabelBias.from_config({"n_labels": 2}).bias.shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from promptkit._registry import add_to_registry
from promptkit.errors import SavedModelError

if TYPE_CHECKING:  # only for annotations: the core never imports a strategy's module
    from promptkit.cloze import ClozeBatch

_TYPES: dict[str, type[AddOn]] = {}
T = TypeVar("T", bound=type)


class AddOn(torch.nn.Module):
    """Base class of add-on modules. Subclasses set ``role`` and override the hooks they need.

    Attributes:
        role: the slot on the model this add-on occupies (``"slot_embeddings"``, ``"prefix"``,
            ``"label_head"``, or a new name); attaching another add-on of the same role replaces it.
        addon_type: the registered type name (set by :func:`register_addon`).
    """

    role: ClassVar[str] = ""
    addon_type: ClassVar[str] = ""

    def config(self) -> dict[str, Any]:
        """Plain JSON-ready settings; ``type(a).from_config(a.config())`` rebuilds the add-on (untrained)."""
        raise NotImplementedError(f"{type(self).__name__} must define config()")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AddOn:
        """Build an add-on from :meth:`config`'s output."""
        return cls(**config)

    def check(self, model: Any) -> None:
        """Raise a promptkit error if this add-on does not fit ``model`` (called when attached)."""

    def slot_vectors(self, model: Any) -> torch.Tensor | None:
        """``[S, H]`` vectors for the template's slot positions, or None if this add-on fills no slots."""
        return None

    def backbone_inputs(self, model: Any, batch: ClozeBatch, inputs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for the backbone call (``input_ids`` or ``inputs_embeds``, ``attention_mask``)."""
        return inputs

    def label_scores(self, model: Any, batch: ClozeBatch, scores: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` label scores from the word scores ``scores`` and the head's input ``features`` ``[B, H']``."""
        return scores


def register_addon(type_name: str) -> Callable[[T], T]:
    """Class decorator: save and load this :class:`AddOn` subclass under ``type_name``.

    Registering the same class twice (a module imported twice) is allowed; another class
    under a taken name is an error.
    """

    def decorate(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, AddOn)) or not cls.role:
            raise TypeError(f"{cls!r} must subclass promptkit.addons.AddOn and set a role")
        add_to_registry(_TYPES, type_name, cls, "add-on type", SavedModelError)
        cls.addon_type = type_name
        return cls

    return decorate


def addon_class(type_name: str, where: str) -> type[AddOn]:
    """The class registered as ``type_name``; ``where`` names the saved file for the error."""
    if type_name not in _TYPES:
        raise SavedModelError(
            f"{where} holds an add-on of unknown type {type_name!r}; registered types are {sorted(_TYPES)}. "
            "Import the module that registers it (with @register_addon) before loading"
        )
    return _TYPES[type_name]


def is_registered(addon: AddOn) -> bool:
    """Whether ``addon``'s class is the one registered under its type name (so it can be saved)."""
    return _TYPES.get(type(addon).addon_type) is type(addon)
