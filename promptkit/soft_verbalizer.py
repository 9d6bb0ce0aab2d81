"""Soft verbalizer: trainable label vectors in place of the label words' output embeddings.

As in WARP (Hambardzumyan et al., 2021), each label gets a vector (and bias) scored
against what the vocabulary projection sees where the label word is predicted; labels
are normalised among themselves. The vectors start at the mean output embedding of the
label's words, so before training the model ranks labels as its verbalizer does.
"""

from __future__ import annotations

from typing import Any

import torch

from promptkit.addons import AddOn, register_addon
from promptkit.errors import ConfigError


@register_addon("soft_verbalizer")
class SoftVerbalizer(AddOn):
    """``[B, H']`` features -> ``[B, n_labels]`` label scores; the add-on of role ``"label_head"``.

    Example:
        >>> SoftVerbalizer(n_labels=2, hidden_size=8)(torch.zeros(3, 8)).shape
        torch.Size([3, 2])
    """

    role = "label_head"

    def __init__(self, n_labels: int, hidden_size: int) -> None:
        super().__init__()
        self.n_labels, self.hidden_size = n_labels, hidden_size
        self.weight = torch.nn.Parameter(torch.zeros(n_labels, hidden_size))
        self.bias = torch.nn.Parameter(torch.zeros(n_labels))

    @classmethod
    def from_model(cls, model: Any) -> SoftVerbalizer:
        """Start from ``model``'s label words: mean output embedding (and bias) of their first tokens."""
        out = model.backbone.get_output_embeddings()
        head = cls(len(model.verbalizer.labels), out.weight.size(1))
        word_label = torch.tensor(model.table.word_label)
        with torch.no_grad():
            for label in range(head.n_labels):
                # both spellings (after a space or not) of every word of the label
                tokens = [ids[0] for space in (True, False) for w, ids in enumerate(model.table.ids(space))
                          if word_label[w] == label]  # fmt: skip
                head.weight[label] = out.weight[tokens].mean(0)
                if getattr(out, "bias", None) is not None:
                    head.bias[label] = out.bias[tokens].mean()
        return head.to(out.weight.device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T.to(features.dtype) + self.bias.to(features.dtype)  # [B, L]

    def config(self) -> dict[str, Any]:
        return {"n_labels": self.n_labels, "hidden_size": self.hidden_size}

    def check(self, model: Any) -> None:
        if self.n_labels != len(model.verbalizer.labels):
            raise ConfigError(
                f"the soft verbalizer has {self.n_labels} label vectors but the verbalizer has "
                f"{len(model.verbalizer.labels)} labels; train a new one for this verbalizer"
            )

    def label_scores(self, model: Any, batch: Any, scores: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self(features).log_softmax(-1)  # [B, L]: label vectors where the word is predicted
