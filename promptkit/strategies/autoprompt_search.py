"""Pure functions of the AutoPrompt search (Shin et al., 2020), each testable on tiny tensors.

- :func:`token_filter`: which vocabulary tokens may become triggers (or label words);
- :func:`candidates`: the HotFlip step, the top-k tokens by the first-order estimate
  ``-(E @ grad)`` of how much swapping a trigger for them lowers the loss;
- :func:`pool_mask`: optionally, only among the tokens the LM itself ranks highest there;
- :func:`tile_batch` + :func:`swap_in`: score many candidates in one forward by repeating an
  encoded batch along the batch dimension with one trigger embedding replaced per copy;
- :func:`candidate_scores`: the search objective (mean log-likelihood of the targets);
- :func:`top_tokens_per_label`: the automatic verbalizer's disjoint top-k per label;
- :func:`write_triggers` / :func:`contains`: write found triggers into template text, and
  check that re-tokenizing it gives the same ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import replace

import torch

from promptkit.cloze import ClozeBatch
from promptkit.errors import StrategyError, TemplateError

TRIGGER_CALL = re.compile(r"\{\{-?\s*trigger\(\s*(\d+)\s*\)\s*-?\}\}")


def word_start_marker(tokens: Sequence[str]) -> str | None:
    """The marker a byte-level / SentencePiece vocabulary puts on word-initial tokens (``Ġ``/``▁``), if any."""
    for marker in ("Ġ", "▁"):
        if sum(t.startswith(marker) for t in tokens) > len(tokens) // 10:
            return marker
    return None


def token_filter(tokenizer, exclude_ids: Iterable[int] = (), allow_capitalised: bool = True) -> torch.Tensor:
    """``[len(tokenizer)]`` bool mask of tokens allowed as triggers or label words.

    Removed: special and added tokens; sub-word continuations (WordPiece ``##x``; in a
    vocabulary that marks word starts with ``Ġ``/``▁``, tokens without the marker); tokens
    whose word (marker removed) is not all ASCII letters; ``exclude_ids`` (the label words'
    own tokens, so a trigger cannot spell the answer); and with ``allow_capitalised=False``
    tokens starting with a capital (AutoPrompt's proper-noun filter for fact probing).

    Raises:
        StrategyError: nothing is left.
    """
    n = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    model = tokenizer.backend_tokenizer.model
    prefix = getattr(model, "continuing_subword_prefix", None) if type(model).__name__ == "WordPiece" else None
    marker = None if prefix else word_start_marker(tokens)
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder) | set(exclude_ids)
    allowed = torch.zeros(n, dtype=torch.bool)
    for i, token in enumerate(tokens):
        if token is None or i in special:
            continue
        if prefix and token.startswith(prefix):
            continue
        if marker:
            if not token.startswith(marker):
                continue
            token = token[len(marker) :]
        if not (token.isascii() and token.isalpha()) or (not allow_capitalised and token[0].isupper()):
            continue
        allowed[i] = True
    if not allowed.any():
        raise StrategyError(
            f"the token filter leaves no candidate tokens out of {n} (excluded ids: {sorted(set(exclude_ids))[:20]}, "
            f"allow_capitalised={allow_capitalised}); use a tokenizer with whole-word alphabetic tokens"
        )
    return allowed


def fit_mask(allowed: torch.Tensor, size: int) -> torch.Tensor:
    """``allowed`` cut or padded with False to ``size`` rows (embedding matrices may have spare rows)."""
    out = torch.zeros(size, dtype=torch.bool)
    n = min(size, len(allowed))
    out[:n] = allowed[:n]
    return out


def candidates(grad: torch.Tensor, embeddings: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """``[min(k, allowed.sum())]`` ids of the allowed tokens with the largest ``-(E @ grad)``, best first.

    Ties go to the lower id (a stable sort), so the result is exact and deterministic.

    Args:
        grad: ``[H]`` loss gradient at one trigger's embedding.
        embeddings: ``[V, H]`` input embedding matrix.
        allowed: ``[V]`` bool mask (:func:`token_filter`).
        k: how many.
    """
    scores = -(embeddings.float() @ grad.float())  # [V]
    scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[: min(k, int(allowed.sum()))]


def pool_mask(prior: torch.Tensor, allowed: torch.Tensor, size: int) -> torch.Tensor:
    """``[V]`` bool: the ``size`` allowed tokens with the highest ``prior`` (ties to the lower id).

    With ``prior`` the language model's own mean log-probability of each token at a trigger's
    position, HotFlip's candidates are then taken among tokens the model finds natural there.
    """
    scores = prior.float().masked_fill(~allowed.to(prior.device), float("-inf"))
    order = torch.sort(scores, descending=True, stable=True).indices[: min(size, int(allowed.sum()))]
    out = torch.zeros_like(allowed, dtype=torch.bool)
    out[order.to(out.device)] = True
    return out


def tile_batch(batch: ClozeBatch, copies: int) -> ClozeBatch:
    """``batch`` repeated ``copies`` times along the batch dimension (copy ``c`` holds rows ``c*R ... c*R+R-1``).

    The forward of the result gives ``[copies * B, L]`` scores, copy by copy.
    """
    rows, cells = batch.input_ids.size(0), batch.n_examples * batch.n_words
    offsets = torch.arange(copies, device=batch.input_ids.device)
    gather = batch.gather.repeat(copies, 1)
    gather[:, 0] += (offsets * rows).repeat_interleave(len(batch.gather))
    return replace(
        batch,
        input_ids=batch.input_ids.repeat(copies, 1),
        attention_mask=batch.attention_mask.repeat(copies, 1),
        positions=batch.positions.repeat(copies, 1),
        slot_positions=batch.slot_positions.repeat(copies, 1),
        example_rows=(batch.example_rows[None] + (offsets * rows)[:, None]).reshape(-1),
        gather=gather,
        cell=(batch.cell[None] + (offsets * cells)[:, None]).reshape(-1),
        n_examples=batch.n_examples * copies,
    )


def swap_in(embeds: torch.Tensor, slot_positions: torch.Tensor, slot: int, vectors: torch.Tensor) -> torch.Tensor:
    """``[C*R, T, H]``: ``embeds`` ``[R, T, H]`` repeated once per row of ``vectors`` ``[C, H]``, with trigger
    ``slot`` of copy ``c`` set to ``vectors[c]`` (the layout of :func:`tile_batch`)."""
    copies, rows = vectors.size(0), embeds.size(0)
    out = embeds.repeat(copies, 1, 1)
    row_index = torch.arange(copies * rows, device=embeds.device)
    out[row_index, slot_positions[:, slot].repeat(copies)] = vectors.to(out.dtype).repeat_interleave(rows, 0)
    return out


def candidate_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[C]`` mean log-likelihood of ``targets`` ``[B, L]`` (one-hot or soft) under label scores ``[C, B, L]``.

    The search maximises this (minus the cross-entropy loss); labels with zero target weight
    are left out, so a ``-inf`` score there does no harm.
    """
    log_probs = scores.float().log_softmax(-1)
    weighted = torch.where(targets > 0, targets * log_probs, torch.zeros_like(log_probs))
    return weighted.sum(-1).mean(-1)


def top_tokens_per_label(scores: torch.Tensor, k: int) -> list[list[int]]:
    """Rows of ``scores`` ``[N, L]`` picked for each label: ``k`` per label, best first, no row twice.

    Labels take turns (rank 1 for every label, then rank 2 ...); ties go to the lower row.
    """
    n, n_labels = scores.shape
    if n < k * n_labels:
        raise StrategyError(f"label-word search needs {k * n_labels} distinct tokens but only {n} pass the filter")
    orders = [torch.sort(scores[:, y], descending=True, stable=True).indices.tolist() for y in range(n_labels)]
    taken: set[int] = set()
    picked: list[list[int]] = [[] for _ in range(n_labels)]
    cursors = [0] * n_labels
    for _ in range(k):
        for y in range(n_labels):
            while orders[y][cursors[y]] in taken:
                cursors[y] += 1
            picked[y].append(orders[y][cursors[y]])
            taken.add(orders[y][cursors[y]])
    return picked


def write_triggers(text: str, groups: Sequence[str], sizes: Sequence[int]) -> str:
    """``text`` with its ``{{ trigger(n) }}`` calls replaced, in order, by the words of ``groups``.

    Raises:
        TemplateError: the calls in the text are not the rendered slots one to one (a trigger
            call in a loop, or with a computed size), so there is no plain text to write.
    """
    calls = list(TRIGGER_CALL.finditer(text))
    if [int(m.group(1)) for m in calls] != list(sizes):
        raise TemplateError(
            f"cannot write the triggers into the template text {text!r}: it renders trigger slots of sizes "
            f"{list(sizes)} but spells the calls {[m.group(0) for m in calls]}; write each as {{{{ trigger(n) }}}}"
        )
    pieces, pos = [], 0
    for match, words in zip(calls, groups):
        before = text[pos : match.start()]
        if before and not before[-1].isspace():  # "{{ text }}{{ trigger(2) }}": BPE triggers carried the space
            words = " " + words
        words = words if not any(c in words for c in "{}%#") else "{% raw %}" + words + "{% endraw %}"
        pieces += [text[pos : match.start()], words]
        pos = match.end()
    return "".join(pieces) + text[pos:]


def contains(sequence: Sequence[int], part: Sequence[int]) -> bool:
    """Whether ``part`` occurs contiguously in ``sequence``."""
    n = len(part)
    return any(list(sequence[i : i + n]) == list(part) for i in range(len(sequence) - n + 1))
