"""Pure tensor functions that turn LM outputs into label scores.

Kept apart from :mod:`promptkit.model` so the parity tests and benchmarks can check each
step on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

from promptkit.errors import BackboneError

Combine = Literal["logsumexp", "mean"]


@contextmanager
def head_only_at(model: torch.nn.Module, positions: torch.Tensor) -> Iterator[None]:
    """Run ``model``'s output head only at ``positions`` (``[R, P]``) of each row.

    The LM body's last hidden states ``[R, T, H]`` are gathered to ``[R, P, H]`` before
    the head sees them, so the logits come out as ``[R, P, V]``. Every Hugging Face MLM
    and causal-LM head is position-wise, so this is exact, and it skips the vocabulary
    projection (most of a small model's cost) at positions nobody reads.
    """
    body = getattr(model, "base_model", None)
    if body is None or body is model:
        raise BackboneError(f"{type(model).__name__} exposes no separate LM body (`base_model`); cannot score it")

    def gather(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state  # [R, T, H]
        index = positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1))  # [R, P, H]
        picked = hidden.gather(1, index)
        if isinstance(output, tuple):
            return (picked, *output[1:])
        output.last_hidden_state = picked
        return output

    handle = body.register_forward_hook(gather)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def output_features(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Capture what the vocabulary projection receives (``[R, P, H']``), e.g. for a soft verbalizer.

    That is the final hidden state for a causal LM and the MLM head's transformed state for
    a masked LM: the vectors the label words' output embeddings are scored against.
    """
    captured: list[torch.Tensor] = []
    handle = model.get_output_embeddings().register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        yield captured
    finally:
        handle.remove()


def word_log_probs(logits: torch.Tensor, gather: torch.Tensor, cell: torch.Tensor, n_cells: int) -> torch.Tensor:
    """Sum the token log-probs of each (example, word) cell.

    Args:
        logits: ``[R, P, V]`` head outputs at the scored positions.
        gather: ``[S, 3]`` (row, position index, token id) to read.
        cell: ``[S]`` flat cell each read value is added to.
        n_cells: ``B * W``.

    Returns:
        ``[n_cells]`` log-probabilities of the label words.
    """
    log_probs = logits.float().log_softmax(-1)  # [R, P, V]
    values = log_probs[gather[:, 0], gather[:, 1], gather[:, 2]]  # [S]
    return torch.zeros(n_cells, dtype=values.dtype, device=values.device).index_add_(0, cell, values)


def combine_words(word_scores: torch.Tensor, word_label: torch.Tensor, n_labels: int, how: Combine) -> torch.Tensor:
    """Combine ``[B, W]`` word log-probs into ``[B, L]`` label scores.

    ``logsumexp`` gives the log of the summed word probabilities (several synonyms add
    up); ``mean`` averages the word log-probs (PET's choice).
    """
    expanded = word_scores.new_full((word_scores.size(0), n_labels, word_scores.size(1)), float("-inf"))
    cols = torch.arange(word_scores.size(1), device=word_scores.device)
    expanded[:, word_label, cols] = word_scores
    if how == "logsumexp":
        return expanded.logsumexp(-1)
    counts = torch.bincount(word_label, minlength=n_labels).to(word_scores.dtype)
    return expanded.nan_to_num(neginf=0.0).sum(-1) / counts


def calibrated(label_log_probs: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
    """Divide label probabilities by a prior and renormalise (contextual / batch calibration).

    Args:
        label_log_probs: ``[N, L]`` log-probabilities normalised over labels.
        prior: ``[L]`` log of the label distribution the model shows without content
            (content-free inputs) or on average (the evaluated batch); None leaves the
            scores as they are.
    """
    if prior is None:
        return label_log_probs
    return (label_log_probs - prior).log_softmax(-1)


def mean_prior(label_log_probs: torch.Tensor) -> torch.Tensor:
    """``[L]`` log of the mean label probability over rows of ``[N, L]`` log-probs."""
    return (label_log_probs.logsumexp(0) - torch.log(torch.tensor(float(label_log_probs.size(0))))).log_softmax(-1)
