"""Trainable slot-vector modules for ``{{ soft(n) }}`` slots: prompt tuning and P-tuning encoders.

Each is an add-on of role ``"slot_embeddings"`` (:mod:`promptkit.addons`): its ``forward()``
returns the ``[S, H]`` vectors that :class:`~promptkit.model.PromptModel` puts at the
template's slot positions. Each is registered with :func:`~promptkit.addons.register_addon`,
so a saved model stores its ``config()`` as JSON and its weights as safetensors.

- :class:`PromptTuning` (Lester et al., 2021): the vectors themselves are the parameters.
- :class:`LstmPromptEncoder` / :class:`MlpPromptEncoder` (P-tuning, Liu et al., 2021):
  ``S`` learned input vectors re-parameterised by a bi-LSTM + MLP, or by a residual MLP.
"""

from __future__ import annotations

from typing import Any

import torch

from promptkit.addons import AddOn, register_addon


class _PromptModule(AddOn):
    """Shared parts: ``S`` learned input vectors ``prompt`` ``[S, H]`` and a JSON config."""

    role = "slot_embeddings"

    def __init__(self, n_tokens: int, hidden_size: int) -> None:
        super().__init__()
        self.n_tokens = n_tokens
        self.hidden_size = hidden_size
        self.prompt = torch.nn.Parameter(torch.zeros(n_tokens, hidden_size))

    def config(self) -> dict[str, Any]:
        """Plain JSON-ready settings; ``type(m).from_config(m.config())`` rebuilds the module."""
        return {"n_tokens": self.n_tokens, "hidden_size": self.hidden_size}

    def slot_vectors(self, model: Any) -> torch.Tensor:
        return self()  # [S, H]

    def extra_repr(self) -> str:
        return f"n_tokens={self.n_tokens}, hidden_size={self.hidden_size}"


@register_addon("prompt_tuning")
class PromptTuning(_PromptModule):
    """Prompt tuning: ``S`` free vectors of the backbone's embedding size.

    Example:
        >>> PromptTuning(n_tokens=4, hidden_size=8)().shape
        torch.Size([4, 8])
    """

    def forward(self) -> torch.Tensor:
        return self.prompt  # [S, H]


@register_addon("p_tuning_lstm")
class LstmPromptEncoder(_PromptModule):
    """P-tuning's encoder: a 2-layer bi-LSTM over the input vectors, then a 2-layer MLP.

    Example:
        >>> LstmPromptEncoder(n_tokens=4, hidden_size=8)().shape
        torch.Size([4, 8])
    """

    def __init__(self, n_tokens: int, hidden_size: int) -> None:
        super().__init__(n_tokens, hidden_size)
        self.lstm = torch.nn.LSTM(hidden_size, hidden_size, num_layers=2, bidirectional=True, batch_first=True)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(2 * hidden_size, hidden_size), torch.nn.ReLU(), torch.nn.Linear(hidden_size, hidden_size)
        )

    def forward(self) -> torch.Tensor:
        states, _ = self.lstm(self.prompt.unsqueeze(0))  # [1, S, 2H]
        return self.mlp(states.squeeze(0))  # [S, H]


@register_addon("p_tuning_mlp")
class MlpPromptEncoder(_PromptModule):
    """P-tuning with a residual 2-layer MLP: ``x + MLP(x)``; starts equal to the input vectors.

    The last layer starts at zero, so an initialisation from vocabulary embeddings is
    kept exactly at step 0 and the MLP learns a correction.

    Example:
        >>> encoder = MlpPromptEncoder(n_tokens=4, hidden_size=8)
        >>> torch.equal(encoder(), encoder.prompt)
        True
    """

    def __init__(self, n_tokens: int, hidden_size: int) -> None:
        super().__init__(n_tokens, hidden_size)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(hidden_size, hidden_size), torch.nn.ReLU(), torch.nn.Linear(hidden_size, hidden_size)
        )
        torch.nn.init.zeros_(self.mlp[2].weight)
        torch.nn.init.zeros_(self.mlp[2].bias)

    def forward(self) -> torch.Tensor:
        return self.prompt + self.mlp(self.prompt)  # [S, H]


ENCODERS: dict[str, type[_PromptModule]] = {"none": PromptTuning, "lstm": LstmPromptEncoder, "mlp": MlpPromptEncoder}
