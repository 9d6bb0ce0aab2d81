"""Multi-token label words on a causal LM: run each prompt once, then only the words' later tokens.

With the mask at the end, a word of ``n`` tokens is scored on its prompt's row (first
token) plus a teacher-forced row ``prompt + word[:-1]`` (:func:`promptkit.cloze_rows.rows_causal`).
Such a row repeats the whole prompt: fifteen two-character Chinese labels, five byte-level
tokens each on SmolLM2, make sixteen full-length rows per example. A causal LM's states for
the prompt cannot see what follows, so :class:`WordRows` runs the rows that are no one's
continuation (stage 1, keeping their key/value cache) and then every continuation row as
only its extra tokens over its prompt's cache (stage 2), with true position ids and an
attention mask of ``[its prompt's cache entries | its own tokens]``.

Scores equal whole rows (tested in float32 to 1e-4). Both stages run in the same forward
pass, so gradients flow through the cache: training gets the same saving. It composes with
prefix tuning (whose key/value vectors are part of stage 1's cache) and with the shared
prefix (:mod:`promptkit.shared_prefix`, applied to stage 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import DynamicCache

from promptkit.cloze import ClozeBatch
from promptkit.prefix import PrefixTuning, cache_argument
from promptkit.scoring import head_only_at, word_log_probs


@dataclass
class WordRows:
    """Which rows of a batch continue which prompt row.

    Attributes:
        first: ``[R1]`` rows run whole in stage 1 (every example's first row among them).
        rest: ``[R2]`` continuation rows.
        base: ``[R2]`` each continuation's prompt row, as an index into ``first``.
        start: ``[R2]`` tokens of that prompt row (where the continuation's own tokens begin).
    """

    first: torch.Tensor
    rest: torch.Tensor
    base: torch.Tensor
    start: torch.Tensor

    @classmethod
    def plan(cls, batch: ClozeBatch) -> WordRows | None:
        """Find continuation rows: a row that is its example's first row plus more tokens. None if there are none."""
        n_rows = batch.input_ids.size(0)
        if batch.n_examples == n_rows:
            return None
        lengths = batch.attention_mask.sum(1)
        owner = torch.bucketize(torch.arange(n_rows, device=lengths.device), batch.example_rows, right=True) - 1
        head = batch.example_rows[owner]  # [R] each row's example's first row
        width = batch.input_ids.size(1)
        within = torch.arange(width, device=lengths.device)[None] < lengths[head][:, None]  # [R, T]
        same = ((batch.input_ids == batch.input_ids[head]) | ~within).all(1)
        is_rest = same & (lengths > lengths[head]) & (head != torch.arange(n_rows, device=lengths.device))
        if not bool(is_rest.any()):
            return None
        first = (~is_rest).nonzero().squeeze(1)
        local = torch.full((n_rows,), -1, dtype=torch.long, device=lengths.device)
        local[first] = torch.arange(first.numel(), device=lengths.device)
        rest = is_rest.nonzero().squeeze(1)
        return cls(first, rest, local[head[rest]], lengths[head[rest]])

    def first_batch(self, batch: ClozeBatch) -> ClozeBatch:
        """Stage 1's rows (gather/cell still index the whole batch: :meth:`word_scores` maps them)."""
        return replace(
            batch,
            input_ids=batch.input_ids[self.first],
            attention_mask=batch.attention_mask[self.first],
            positions=batch.positions[self.first],
            slot_positions=batch.slot_positions[self.first],
        )

    def local_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Positions in stage 1 of whole-batch row indices ``rows`` (all in ``first``)."""
        return torch.searchsorted(self.first, rows)

    def word_scores(
        self, model: Any, batch: ClozeBatch, logits: torch.Tensor, inputs: dict[str, Any], embeds: torch.Tensor | None
    ) -> torch.Tensor:
        """``[B * W]`` word log-probs: stage 1's ``logits`` plus stage 2 run here over stage 1's cache (``inputs``)."""
        n_cells = batch.n_examples * batch.n_words
        rows = batch.gather[:, 0]
        in_first = torch.isin(rows, self.first)
        gather1 = torch.stack([self.local_rows(rows[in_first]), *batch.gather[in_first, 1:].T], 1)
        words = word_log_probs(logits, gather1, batch.cell[in_first], n_cells)
        return words + self._rest_scores(model, batch, inputs, embeds, ~in_first, n_cells)

    def _rest_scores(self, model, batch, inputs, embeds, picked, n_cells) -> torch.Tensor:
        stage1 = inputs[cache_argument(model.backbone)]
        mask1 = inputs["attention_mask"][self.base]  # [R2, C]: which of its prompt row's cache entries a row sees
        before = sum(a.n_tokens for a in model.addons.values() if isinstance(a, PrefixTuning))  # entries in front
        source, inside, offsets = batch.tail_window(self.start, self.rest)  # each row's own tokens
        rows = self.rest[:, None]
        cache = DynamicCache(config=model.backbone.config)
        for layer, part in enumerate(stage1.layers):
            cache.update(part.keys[self.base], part.values[self.base], layer)
        step = {
            "attention_mask": torch.cat([mask1, inside.long()], 1),
            "position_ids": before + self.start[:, None] + offsets[None],  # a row's tokens sit at before + index
            "use_cache": True,
            cache_argument(model.backbone): cache,
        }
        if embeds is None:
            step["input_ids"] = torch.where(inside, batch.input_ids[rows, source], model.encoder.pad_id)
        else:
            step["inputs_embeds"] = embeds[rows, source]
        positions = (batch.positions[self.rest] - self.start[:, None]).clamp(min=0)
        with head_only_at(model.backbone, positions):
            logits = model.backbone(**step).logits
        local = torch.full((batch.input_ids.size(0),), -1, dtype=torch.long, device=positions.device)
        local[self.rest] = torch.arange(self.rest.numel(), device=positions.device)
        gather = batch.gather[picked]
        gather = torch.stack([local[gather[:, 0]], gather[:, 1], gather[:, 2]], 1)
        return word_log_probs(logits, gather, batch.cell[picked], n_cells)
