"""Score AutoPrompt candidates on a causal LM without re-running the text before the triggers.

In ``"{{ text }} {{ trigger(4) }} {{ mask }}"`` every candidate changes one trigger token, and
a causal LM's states before the first trigger cannot see it. So each row's *prefix* (the
tokens before its first trigger) is run once, its key/value cache kept, and every candidate
runs only the *suffix* (the triggers and what follows: a handful of tokens instead of the
whole review). Rows are right-padded, so prefixes end at different positions; the suffixes
are packed to the left of their own tensor, given their true position ids, and an attention
mask over ``[prefix cache | suffix]`` hides each row's cache entries past its own prefix.
Candidates for trigger ``j`` share the triggers before it too: :meth:`SuffixBatch.advance`
runs those once per batch and moves them into the cache.

The scores equal :meth:`PromptModel.forward`'s (tested to float tolerance); the search
gets several times more candidates and rows per second. It applies to causal heads whose
scored positions all come after the first trigger, with no add-on besides the triggers;
:meth:`SuffixBatch.build` returns None otherwise and the search runs whole rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from transformers import DynamicCache

from promptkit.cloze import ClozeBatch
from promptkit.prefix import cache_argument
from promptkit.scoring import combine_words, head_only_at, word_log_probs
from promptkit.shared_prefix import SharedPrefixCache
from promptkit.strategies.autoprompt_search import tile_batch
from promptkit.strategies.autoprompt_triggers import TriggerTokens


@dataclass
class SuffixBatch:
    """One encoded batch split at each row's first trigger: the prefix as a cache, the rest as a batch.

    Attributes:
        suffix: the batch from the first trigger on, in suffix coordinates (``[R, Ls]``).
        keys, values: per layer ``[R, kv_heads, Lp, head_dim]``, the prefixes' cache.
        prefix_mask: ``[R, Lp]`` 1 where a cache entry is in the row's own prefix.
        position_ids: ``[R, Ls]`` the suffix tokens' positions in the whole row.
        prefix_last: ``[R, H]`` the LM body's output at each prefix's last token.
    """

    suffix: ClozeBatch
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    prefix_mask: torch.Tensor
    position_ids: torch.Tensor
    prefix_last: torch.Tensor

    @classmethod
    def build(cls, model, batch: ClozeBatch, cache: PrefixCache | None = None) -> SuffixBatch | None:
        """Split ``batch`` at each row's first trigger; None where the suffix path does not apply (module doc).

        ``cache`` keeps prefixes run before (keyed by their token ids): a search draws the
        same training rows again and again, and their text never changes.
        """
        if model.head != "causal" or batch.slot_positions.shape[1] == 0 or set(model.addons) != {"slot_embeddings"}:
            return None
        addon = model.addons["slot_embeddings"]
        if not isinstance(addon, TriggerTokens):
            return None
        batch = batch.to(model.device)
        ids = batch.input_ids.clone()  # the triggers written in as the tokens they are: prefixes are keyed by ids
        ids.scatter_(1, batch.slot_positions, addon.token_ids.to(ids.device).expand(ids.size(0), -1))
        batch = replace(batch, input_ids=ids)
        split = batch.slot_positions.min(1).values  # [R] first trigger of each row
        read = batch.positions[batch.gather[:, 0], batch.gather[:, 1]]  # scored positions actually read
        if int(split.min()) < 1 or bool((read < split[batch.gather[:, 0]]).any()):
            return None
        suffix, _, offsets = batch.tails(split, model.encoder.pad_id)
        prefixes = [tuple(batch.input_ids[r, : int(split[r])].tolist()) for r in range(len(split))]
        keys, values, last = (cache if cache is not None else PrefixCache()).lookup(model, prefixes)
        prefix_mask = (torch.arange(keys[0].size(2), device=model.device)[None] < split[:, None]).long()  # [R, Lp]
        return cls(suffix, keys, values, prefix_mask, split[:, None] + offsets[None], last)

    def embeddings(self, model) -> torch.Tensor:
        """``[R, Ls, H]`` the suffixes' input embeddings with the model's current triggers (written in as ids)."""
        return model.backbone.get_input_embeddings()(self.suffix.input_ids)

    def advance(self, model, n: int) -> SuffixBatch:
        """The same batch with the suffix's first ``n`` tokens run once and moved into the cache.

        Scoring candidates for trigger ``j`` needs only the tokens from ``j`` on: the triggers
        before it are the same for every candidate. Each row must have ``n`` real suffix tokens.
        """
        if n <= 0:
            return self
        cache = DynamicCache(config=model.backbone.config)
        for layer, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            cache.update(k, v, layer)
        mask = torch.cat([self.prefix_mask, self.suffix.attention_mask[:, :n]], dim=1)
        body = model.backbone.base_model
        with torch.no_grad():
            hidden = body(
                input_ids=self.suffix.input_ids[:, :n], attention_mask=mask, position_ids=self.position_ids[:, :n],
                use_cache=True, **{cache_argument(body): cache},
            )[0]  # fmt: skip
        suffix = replace(
            self.suffix,
            input_ids=self.suffix.input_ids[:, n:],
            attention_mask=self.suffix.attention_mask[:, n:],
            positions=self.suffix.positions - n,
            slot_positions=self.suffix.slot_positions - n,  # triggers before the cut are negative: cached now
        )
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        return SuffixBatch(suffix, keys, values, mask, self.position_ids[:, n:], hidden[:, -1])

    def scores(self, model, embeds: torch.Tensor, copies: int = 1) -> torch.Tensor:
        """``[copies * B, L]`` label scores of ``embeds`` (``[copies * R, Ls, H]``, :func:`tile_batch` layout)."""
        suffix = tile_batch(self.suffix, copies) if copies > 1 else self.suffix
        cache = SharedPrefixCache(model.backbone.config, self.keys, self.values)  # tiled per layer, not kept
        mask = torch.cat([self.prefix_mask.repeat(copies, 1), suffix.attention_mask], dim=1)
        with head_only_at(model.backbone, suffix.positions):
            logits = model.backbone(
                inputs_embeds=embeds, attention_mask=mask, position_ids=self.position_ids.repeat(copies, 1),
                use_cache=True, **{cache_argument(model.backbone): cache},
            ).logits  # fmt: skip
        words = word_log_probs(logits, suffix.gather, suffix.cell, suffix.n_examples * suffix.n_words)
        words = words.view(suffix.n_examples, suffix.n_words)
        return combine_words(words, model.word_label, len(model.verbalizer.labels), model.combine)


class PrefixCache:
    """Key/value caches of prefixes already run, by their token ids (bounded by ``max_bytes``).

    Once full, new prefixes are still run, just not kept.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: dict[tuple[int, ...], tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]] = {}

    def lookup(
        self, model, prefixes: list[tuple[int, ...]]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Per layer ``[R, kv_heads, Lp, head_dim]`` keys and values of ``prefixes`` (right-padded to the longest),
        and ``[R, H]`` the LM body's output at each prefix's last token."""
        missing = list(dict.fromkeys(p for p in prefixes if p not in self.entries))
        fresh = dict(zip(missing, _run(model, missing))) if missing else {}
        for prefix, entry in fresh.items():
            size = sum(t.numel() * t.element_size() for part in entry[:2] for t in part)
            if self.bytes + size <= self.max_bytes:
                self.entries[prefix], self.bytes = entry, self.bytes + size
        entries = {p: fresh[p] if p in fresh else self.entries[p] for p in set(prefixes)}
        longest = max(len(p) for p in prefixes)
        n_layers = len(entries[prefixes[0]][0])
        keys, values = (
            [_padded([entries[p][part][layer] for p in prefixes], longest) for layer in range(n_layers)]
            for part in (0, 1)
        )
        return keys, values, torch.stack([entries[p][2] for p in prefixes])


def _padded(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
    """``[R, heads, length, d]`` from ``[heads, L_r, d]`` tensors, zeros after each one's end (masked out)."""
    out = tensors[0].new_zeros(len(tensors), tensors[0].size(0), length, tensors[0].size(2))
    for r, tensor in enumerate(tensors):
        out[r, :, : tensor.size(1)] = tensor
    return out


def _run(model, prefixes: list[tuple[int, ...]]) -> list[tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]]:
    """Run ``prefixes`` through the LM body in one batch; each one's per-layer ``[heads, L, d]`` keys and values,
    and its last token's ``[H]`` output (what the LM head would read to predict the next token)."""
    longest = max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), longest), model.encoder.pad_id, dtype=torch.long, device=model.device)
    mask = torch.zeros_like(ids)
    for r, prefix in enumerate(prefixes):
        ids[r, : len(prefix)] = torch.tensor(prefix, device=model.device)
        mask[r, : len(prefix)] = 1
    cache = DynamicCache(config=model.backbone.config)
    body = model.backbone.base_model  # the LM body: no head over the prefix, nobody reads it
    with torch.no_grad():
        hidden = body(input_ids=ids, attention_mask=mask, use_cache=True, **{cache_argument(body): cache})[0]
    return [
        ([layer.keys[r, :, : len(p)].clone() for layer in cache.layers],
         [layer.values[r, :, : len(p)].clone() for layer in cache.layers],
         hidden[r, len(p) - 1].clone())
        for r, p in enumerate(prefixes)
    ]  # fmt: skip
