"""Shared-prefix key/value reuse: run the tokens every prompt begins with once, not once per row.

Demonstrations, an instruction or system preamble, a chat header and a template's fixed
opening are the same tokens at the start of every prompt. A causal LM's states for those
tokens cannot see what follows, so at inference :class:`~promptkit.model.PromptModel` runs
such a prefix once (one row), keeps its key/value cache, and runs only each row's *suffix*
against that cache, expanded to the batch:

- the prefix is found from the tokenized batch: the longest common token prefix of the
  rows that share their first :attr:`PrefixReuse.min_tokens` tokens with the most other
  rows, cut so every scored position and every slot token stays in the suffix;
- rows that lack it run whole, with the prefix's cache entries masked out for them;
- suffixes are packed to the left of their own tensor with their true position ids, and
  the attention mask spans ``[add-on cache | prefix | suffix]``;
- a prefix run once is kept for the rest of the scoring pass (:class:`PrefixStore`), and a
  batch whose common prefix only extends a kept one reuses the kept one.

Probabilities equal a whole-row forward pass (tested to 1e-4 in float32). It applies only
where no gradient is taken (the cached prefix holds no graph), to causal heads (a masked
LM attends both ways: every token sees the whole row), and composes with prefix tuning,
whose own key/value vectors go in front of the shared prefix. An add-on that changes the
backbone's inputs in another way turns it off.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from promptkit.addons import AddOn
from promptkit.cloze import ClozeBatch
from promptkit.prefix import PrefixTuning, cache_argument
from promptkit.scoring import head_only_at

Entry = tuple[list[torch.Tensor], list[torch.Tensor], int]  # per-layer [1, kv, C, d] keys, values; add-on length


class PrefixStore:
    """Prefix caches run during one scoring pass, by token ids (the ``keep`` most recent)."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.entries: OrderedDict[tuple[int, ...], Entry] = OrderedDict()
        self.runs = 0  # prefixes run (the rest were found here)

    def known(self, ids: tuple[int, ...]) -> tuple[int, ...] | None:
        """The longest kept prefix that ``ids`` starts with."""
        hits = [p for p in self.entries if ids[: len(p)] == p]
        return max(hits, key=len) if hits else None

    def get(self, model: Any, prefix: tuple[int, ...]) -> Entry:
        """The cache of ``prefix``, run now if it is not kept."""
        if prefix in self.entries:
            self.entries.move_to_end(prefix)
            return self.entries[prefix]
        entry = _run_prefix(model, prefix)
        self.runs += 1
        self.entries[prefix] = entry
        while len(self.entries) > self.keep:
            self.entries.popitem(last=False)
        return entry


@dataclass
class PrefixReuse:
    """Settings of the reuse; ``min_tokens`` is the shortest prefix worth a separate pass."""

    enabled: bool = True
    min_tokens: int = 16

    def applies(self, model: Any, batch: ClozeBatch) -> bool:
        """Whether ``batch`` may take the reuse path (module doc), before looking at its tokens."""
        return self.enabled and not torch.is_grad_enabled() and batch.input_ids.size(0) > 1 and cache_reusable(model)

    def split(self, batch: ClozeBatch, store: PrefixStore) -> tuple[tuple[int, ...], torch.Tensor] | None:
        """``(prefix ids, [R] bool: row starts with it)`` for ``batch``, or None where no prefix is worth it.

        The prefix is shared by at least two rows, or was run before in this pass (``store``).
        """
        ids, lengths = batch.input_ids, batch.attention_mask.sum(1)
        limit = _suffix_must_start_by(batch)  # [R] the prefix may not reach these positions
        m = self.min_tokens
        heads = [tuple(ids[r, :m].tolist()) if int(limit[r]) >= m else None for r in range(ids.size(0))]
        counted = Counter(h for h in heads if h is not None)
        if not counted:
            return None
        head, count = counted.most_common(1)[0]
        group = torch.tensor([h == head for h in heads], device=ids.device)
        rows = ids[group]
        same = (rows == rows[:1]).long().cumprod(1).sum(1)  # [G] leading tokens equal to the group's first row
        length = int(torch.minimum(same, limit[group]).min().clamp(max=int(lengths[group].min())))
        prefix = tuple(rows[0, :length].tolist())
        kept = store.known(prefix)
        if kept is not None and len(kept) >= m:
            return kept, group  # run before: worth it even for one row
        return (prefix, group) if count > 1 and len(prefix) >= m else None


def cache_reusable(model: Any) -> bool:
    """Whether ``model``'s rows may be run in parts over a key/value cache: a causal head, and add-ons that
    change no backbone input or only put prefix-tuning vectors in front."""
    return model.head == "causal" and all(
        isinstance(addon, PrefixTuning) or type(addon).backbone_inputs is AddOn.backbone_inputs
        for addon in model.addons.values()
    )


def _suffix_must_start_by(batch: ClozeBatch) -> torch.Tensor:
    """``[R]`` per row, the first position the prefix may not cover: its first scored or slot position.

    A row's scored positions are listed first and ascending (zeros pad the rest), so column 0 is the first.
    """
    first = batch.positions[:, 0]
    if batch.slot_positions.shape[1]:
        first = torch.minimum(first, batch.slot_positions.min(1).values)
    return first


def _run_prefix(model: Any, prefix: tuple[int, ...]) -> Entry:
    """Run ``prefix`` (one row) through the backbone with the add-ons' inputs; its per-layer cache."""
    ids = torch.tensor([prefix], device=model.device)
    inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for addon in model._hooks():
        inputs = addon.backbone_inputs(model, None, inputs)
    before = inputs["attention_mask"].size(1) - len(prefix)  # entries an add-on put in front (prefix tuning)
    key = cache_argument(model.backbone)
    cache = inputs.setdefault(key, DynamicCache(config=model.backbone.config))  # filled in place
    last = torch.tensor([[len(prefix) - 1]], device=model.device)
    with head_only_at(model.backbone, last):
        model.backbone(**inputs, use_cache=True)
    return [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers], before


class SharedPrefixCache(DynamicCache):
    """A key/value cache over prefix entries that keeps nothing new.

    Per layer the prefix is ``[1, heads, P, d]`` (one prefix shared by every row) or
    ``[R, heads, P, d]`` (each row's own; a pass over ``k * R`` rows tiles them ``k`` times,
    the :func:`~promptkit.strategies.autoprompt_search.tile_batch` layout). Each layer hands its
    attention ``[prefix | the rows' own keys]`` and drops the concatenation once the layer is
    done. A :class:`~transformers.DynamicCache` would keep every layer's ``rows x (P + own)``
    copy until the pass ends, so a batch's peak memory grew with its rows and its prefix's
    length (about 250 MiB more for 40 SST-2 train phrases of 55 tokens). For passes nobody
    continues: the inference pass over the suffixes, AutoPrompt's candidate scoring.
    """

    def __init__(self, config: Any, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        super().__init__(config=config)
        for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
            super().update(k, v, layer)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer, rows = self.layers[layer_idx], key_states.size(0)
        return (
            torch.cat([_tiled(layer.keys, rows), key_states], dim=-2),
            torch.cat([_tiled(layer.values, rows), value_states], dim=-2),
        )


def _tiled(prefix: torch.Tensor, rows: int) -> torch.Tensor:
    """``[rows, heads, P, d]`` from a ``[1 or R, heads, P, d]`` prefix (``rows`` a multiple of ``R``)."""
    if prefix.size(0) == 1:
        return prefix.expand(rows, -1, -1, -1)
    return prefix.repeat(rows // prefix.size(0), 1, 1, 1)


def suffix_inputs(
    model: Any, batch: ClozeBatch, embeds: torch.Tensor | None, prefix: tuple[int, ...], group: torch.Tensor,
    store: PrefixStore, keep_cache: bool = False,
) -> tuple[ClozeBatch, dict[str, Any]]:  # fmt: skip
    """The batch from each row's split on and the backbone's keyword arguments over the prefix's cache.

    Rows in ``group`` start after ``prefix``; the others run whole, the prefix's entries masked out.
    With ``keep_cache`` the pass leaves every row's whole cache behind (a later pass continues the
    rows: multi-token words); without, it keeps only the shared prefix (:class:`SharedPrefixCache`).
    """
    keys, values, before = store.get(model, prefix)
    n_rows = batch.input_ids.size(0)
    split = group.long() * len(prefix)  # [R]
    suffix, source, offsets = batch.tails(split, model.encoder.pad_id)
    if keep_cache:
        cache = DynamicCache(config=model.backbone.config)
        for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
            cache.update(k.expand(n_rows, -1, -1, -1), v.expand(n_rows, -1, -1, -1), layer)
    else:
        cache = SharedPrefixCache(model.backbone.config, keys, values)
    mask = torch.cat(
        [suffix.attention_mask.new_ones(n_rows, before), group.long()[:, None].expand(-1, len(prefix)),
         suffix.attention_mask], dim=1,
    )  # fmt: skip
    inputs: dict[str, Any] = {
        "attention_mask": mask,
        "position_ids": before + split[:, None] + offsets[None],
        "use_cache": True,
        cache_argument(model.backbone): cache,
    }
    if embeds is None:
        inputs["input_ids"] = suffix.input_ids
    else:
        inputs["inputs_embeds"] = embeds[torch.arange(n_rows, device=source.device)[:, None], source]
    return suffix, inputs
