"""One pass of the LM over an encoded batch: the label words' log-probabilities and the head's features.

:meth:`PromptModel.forward <promptkit.model.PromptModel.forward>` calls :func:`word_scores`
and combines its words into labels. Here the batch is run whole, or, on a causal LM, split
over key/value caches where rows repeat each other's tokens, with the same result:

- rows that only extend another row with a multi-token word's tokens run those tokens alone
  (:mod:`promptkit.word_rows`, with or without gradients);
- at inference, the tokens the rows start with run once (:mod:`promptkit.shared_prefix`).

Given ``inputs_embeds`` (a tensor someone takes gradients of), rows always run whole.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from promptkit.cloze import ClozeBatch
from promptkit.prefix import cache_argument
from promptkit.scoring import head_only_at, output_features, word_log_probs
from promptkit.shared_prefix import PrefixStore, cache_reusable, suffix_inputs
from promptkit.word_rows import WordRows


def word_scores(
    model: Any, batch: ClozeBatch, inputs_embeds: torch.Tensor | None, store: PrefixStore
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B * W]`` label-word log-probs and ``[B, H']`` head features where each example's word is predicted.

    Args:
        model: the :class:`~promptkit.model.PromptModel` (its backbone, add-ons and settings).
        batch: the encoded batch, on the model's device.
        inputs_embeds: ``[R, T, H]`` given by the caller, or None (ids, slot vectors filled in).
        store: shared-prefix caches of this scoring pass.
    """
    given = inputs_embeds is not None
    if inputs_embeds is None and batch.slot_positions.shape[1]:
        inputs_embeds = model.input_embeddings(batch)
    words = WordRows.plan(batch) if not given and cache_reusable(model) else None
    run = batch if words is None else words.first_batch(batch)
    embeds = inputs_embeds if words is None or inputs_embeds is None else inputs_embeds[words.first]
    split = None if given or not model.prefix_reuse.applies(model, run) else model.prefix_reuse.split(run, store)
    if split is not None:
        run, inputs = suffix_inputs(model, run, embeds, *split, store, keep_cache=words is not None)
    else:
        inputs = _whole_inputs(model, run, embeds, keep_cache=words is not None)
    with head_only_at(model.backbone, run.positions), output_features(model.backbone) as features:
        logits = model.backbone(**inputs).logits  # [R, P, V]
    if words is None:
        scores = word_log_probs(logits, batch.gather, batch.cell, batch.n_examples * batch.n_words)
        return scores, features[0][batch.example_rows, 0]
    scores = words.word_scores(model, batch, logits, inputs, inputs_embeds)
    return scores, features[0][words.local_rows(batch.example_rows), 0]


def _whole_inputs(model: Any, run: ClozeBatch, embeds: torch.Tensor | None, keep_cache: bool) -> dict[str, Any]:
    """The backbone's keyword arguments for whole rows, after the add-ons' hooks; a cache kept if asked."""
    inputs: dict[str, Any] = {"input_ids": run.input_ids} if embeds is None else {"inputs_embeds": embeds}
    inputs["attention_mask"] = run.attention_mask
    for addon in model._hooks():
        inputs = addon.backbone_inputs(model, run, inputs)
    inputs["use_cache"] = keep_cache  # stage 2 of WordRows reads stage 1's cache
    if keep_cache:
        inputs.setdefault(cache_argument(model.backbone), DynamicCache(config=model.backbone.config))
    return inputs
