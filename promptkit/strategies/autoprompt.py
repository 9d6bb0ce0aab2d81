"""AutoPrompt (Shin et al., 2020): a gradient-guided search for discrete trigger tokens.

The template's ``{{ trigger(n) }}`` slots hold real vocabulary tokens (starting as
``init_token``); the backbone stays frozen and nothing trains. Each iteration averages the
loss gradient at the trigger embeddings over ``accumulation`` batches, picks one trigger
position at random, takes the ``n_candidates`` tokens with the largest ``-(E @ grad)``
(HotFlip's first-order estimate of the loss drop), scores the current token and every
candidate on a fresh batch, many candidates per forward, and keeps the best candidate only
if it beats the current token. With a dev set, the best trigger set on it is kept.

The result is a :class:`TriggerTokens` add-on (token ids; saved with the model) and
``template_``, the same template with the trigger words written in as plain text.
:meth:`AutoPrompt.search_label_words` is the paper's automatic verbalizer.
"""

from __future__ import annotations

import json
import logging
import random
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from promptkit.atomic import write_text
from promptkit.errors import DataError, StrategyError, TemplateError, check_choice
from promptkit.examples import as_examples, labels_of, target_distributions
from promptkit.label_words import tokenize_in_context
from promptkit.model import PromptModel
from promptkit.strategies import autoprompt_search as search
from promptkit.strategies.autoprompt_prefix import PrefixCache, SuffixBatch
from promptkit.strategies.autoprompt_triggers import TriggerTokens, trigger_sizes
from promptkit.strategies.autoprompt_words import save_prompt, search_label_words
from promptkit.strategies.base import StrategyBase
from promptkit.strategies.registry import register
from promptkit.template import Template
from promptkit.verbalizer import Verbalizer

logger = logging.getLogger(__name__)
Filter = Literal["default", "no_capitals"]
MAX_TOKENS = 8192  # most tokens (rows x length) of one candidate-scoring forward (candidates are chunked to fit)


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        zero = " (a search budget of zero: nothing would be searched)" if name == "iterations" else ""
        raise StrategyError(f"autoprompt {name}={value!r} is invalid: expected an int >= 1{zero}")
    return value


@contextmanager
def _frozen(backbone: torch.nn.Module):
    """Backbone frozen and in eval mode; its ``requires_grad`` flags are restored afterwards."""
    flags = [p.requires_grad for p in backbone.parameters()]
    backbone.requires_grad_(False).eval()
    try:
        yield
    finally:
        for p, flag in zip(backbone.parameters(), flags):
            p.requires_grad_(flag)


@register("autoprompt")
class AutoPrompt(StrategyBase):
    """Search discrete trigger tokens for the template's ``{{ trigger(n) }}`` slots; nothing trains.

    Args:
        n_candidates: candidate tokens per iteration (``k``).
        iterations: search iterations (one trigger position each).
        accumulation: batches whose gradients are averaged per iteration.
        batch_size: examples per gradient and scoring batch (drawn with ``seed``).
        filter: ``"default"`` or ``"no_capitals"`` (also drop capitalised tokens: proper nouns).
        init_token: the word every trigger starts as (one token after a space).
        seed: seeds the batches and positions: the same seed gives the same triggers.
        dev_every: evaluate on ``dev`` every this many iterations (the best set is kept).
        label_words_k: words per label :meth:`search_label_words` finds.
        confirm: accept the iteration's best candidate only if it also beats the current token
            on a second fresh batch. The best of ``k`` candidates on one small batch nearly
            always beats the current token by chance (the winner's curse), and the search then
            wanders; the second batch scores just the two tokens, so it costs little.
        lm_pool: causal heads only: take the ``n_candidates`` HotFlip candidates among the
            ``lm_pool`` tokens the language model itself finds most probable at the trigger's
            position (its next-token distribution there, averaged over the gradient batch).
            On a small LM the first-order estimate alone ranks rare, unrelated tokens first
            (``ctypes``, ``Everglades``); None (the paper's search) uses the whole filtered vocabulary.

    Attributes (after :meth:`fit`):
        triggers_: the trigger token ids, slot by slot.
        template_: the template with the trigger words written in (no slots).
        history_: one dict per iteration (see :meth:`to_json`).

    Example:
        >>> model.template = Template("{{ text }} {{ trigger(5) }} {{ mask }}")  # doctest: +SKIP
        >>> strategy = get_strategy("autoprompt", iterations=100)  # doctest: +SKIP
        >>> model = strategy.fit(model, train, dev=dev)  # doctest: +SKIP
        >>> strategy.template_.text, strategy.save_prompt("my_prompts", "sst2_found")  # doctest: +SKIP
    """

    def __init__(
        self,
        n_candidates: int = 10,
        iterations: int = 50,
        accumulation: int = 1,
        batch_size: int = 8,
        filter: Filter = "default",
        init_token: str = "the",
        seed: int = 0,
        dev_every: int = 10,
        label_words_k: int = 1,
        confirm: bool = True,
        lm_pool: int | None = None,
    ) -> None:
        for name in ("n_candidates", "iterations", "accumulation", "batch_size", "dev_every", "label_words_k"):
            _positive(name, locals()[name])
        if lm_pool is not None:
            _positive("lm_pool", lm_pool)
        check_choice("autoprompt filter", filter, ("default", "no_capitals"), StrategyError)
        if not isinstance(init_token, str) or not init_token.strip():
            raise StrategyError(f"autoprompt init_token={init_token!r} is invalid: expected a word such as 'the'")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise StrategyError(f"autoprompt seed={seed!r} is invalid: expected an int")
        self.n_candidates, self.iterations, self.accumulation = n_candidates, iterations, accumulation
        self.batch_size, self.filter, self.init_token, self.seed = batch_size, filter, init_token, seed
        if not isinstance(confirm, bool):
            raise StrategyError(f"autoprompt confirm={confirm!r} is invalid: expected True or False")
        self.dev_every, self.label_words_k, self.confirm, self.lm_pool = dev_every, label_words_k, confirm, lm_pool
        self.triggers_: list[int] | None = None
        self.template_: Template | None = None
        self.verbalizer_: Verbalizer | None = None
        self.history_: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ helpers
    def allowed_tokens(self, model: PromptModel) -> torch.Tensor:
        """``[V]`` tokens the search may use: :func:`~.autoprompt_search.token_filter` minus the label words."""
        label_ids = {i for space in (True, False) for ids in model.table.ids(space) for i in ids}
        allowed = search.token_filter(model.tokenizer, label_ids, allow_capitalised=self.filter == "default")
        return search.fit_mask(allowed, model.backbone.get_input_embeddings().weight.size(0))

    def _init_ids(self, model: PromptModel, n: int, allowed: torch.Tensor) -> list[int]:
        ids = tokenize_in_context(model.tokenizer, self.init_token.strip(), True)
        if len(ids) != 1:
            raise StrategyError(f"init_token={self.init_token!r} is {len(ids)} tokens; pick a one-token word")
        label_ids = {i for space in (True, False) for w in model.table.ids(space) for i in w}
        if ids[0] in label_ids:
            raise StrategyError(
                f"init_token={self.init_token!r} is a label word's token; triggers must not spell a label word"
            )
        return [ids[0]] * n

    def _slot_grad(
        self, model, batch, target, cache: PrefixCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[S, H]`` gradient of the loss at the trigger embeddings, summed over the batch's rows, and with
        ``lm_pool`` the ``[S, V]`` LM prior at each trigger (:meth:`_prior`), else None."""
        split = SuffixBatch.build(model, batch, cache)
        view = batch.to(model.device) if split is None else split.suffix
        embeds = (model.input_embeddings(view) if split is None else split.embeddings(model)).detach().requires_grad_()
        seen: list[torch.Tensor] = []  # the body's outputs before the head reads only the scored positions
        hook = model.backbone.base_model.register_forward_hook(lambda module, args, out: seen.append(out[0].detach()))
        try:
            scores = model(view, inputs_embeds=embeds) if split is None else split.scores(model, embeds)
        finally:
            hook.remove()
        loss = -search.candidate_scores(scores[None], target.to(model.device))[0]
        loss.backward()
        index = view.slot_positions.unsqueeze(-1).expand(-1, -1, embeds.size(-1))
        prior = self._prior(model, seen[0], view, split) if self.lm_pool is not None else None
        return embeds.grad.gather(1, index).sum(0).float().cpu(), prior

    @staticmethod
    def _prior(model, hidden: torch.Tensor, view, split: SuffixBatch | None) -> torch.Tensor | None:
        """``[S, V]`` the causal LM's mean log-probability of each token at each trigger position: its
        next-token distribution one position before the trigger, averaged over the rows."""
        if hidden.size(0) != view.slot_positions.size(0):
            return None  # multi-token label words ran extra rows: no prior this batch
        before = view.slot_positions - 1  # [R, S]
        picked = hidden.gather(1, before.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.size(-1)))
        valid = before >= 0
        if split is not None:  # the first trigger's predecessor is the prefix's last token, run once and kept
            picked = torch.where(valid[..., None], picked, split.prefix_last[:, None, :].to(picked.dtype))
            valid = torch.ones_like(valid)
        with torch.no_grad():
            log_probs = model.backbone.get_output_embeddings()(picked).float().log_softmax(-1)  # [R, S, V]
        weight = valid[..., None].float()
        return ((log_probs * weight).sum(0) / weight.sum(0).clamp(min=1)).cpu()

    def score_tokens(
        self, model, batch, slot: int, token_ids: torch.Tensor, target: torch.Tensor, cache: PrefixCache | None = None
    ) -> torch.Tensor:
        """``[C]`` search objective with trigger ``slot`` set to each of ``token_ids``, many per forward.

        On a causal head only the tokens from trigger ``slot`` on are run per candidate
        (:class:`~.autoprompt_prefix.SuffixBatch`); otherwise whole rows are.
        """
        weight = model.backbone.get_input_embeddings().weight
        out = []
        with torch.inference_mode():
            split = SuffixBatch.build(model, batch, cache)
            if split is not None:  # the triggers before ``slot`` are the same for every candidate: run them once
                split = split.advance(model, int(split.suffix.slot_positions[:, slot].min()))
            view = batch.to(model.device) if split is None else split.suffix
            embeds = model.input_embeddings(view) if split is None else split.embeddings(model)  # [R, T, H]
            step = max(1, MAX_TOKENS // embeds[:, :, 0].numel())
            for start in range(0, len(token_ids), step):
                chunk = token_ids[start : start + step].to(model.device)
                tiled = search.swap_in(embeds, view.slot_positions, slot, weight[chunk])
                if split is None:
                    scores = model(search.tile_batch(view, len(chunk)), inputs_embeds=tiled)
                else:
                    scores = split.scores(model, tiled, len(chunk))
                out.append(
                    search.candidate_scores(scores.view(len(chunk), batch.n_examples, -1), target.to(model.device))
                )
        return torch.cat(out).cpu()

    def _dev_score(
        self, model: PromptModel, dev: list[dict], dev_targets: list[int], cache: PrefixCache
    ) -> tuple[float, float]:
        """``(accuracy, mean gold log-probability)`` on ``dev``; on a causal head through the suffix path
        (each dev row's text before the triggers runs once per search, in ``cache``)."""
        batches = [model.encode(dev[i : i + self.batch_size]) for i in range(0, len(dev), self.batch_size)]
        splits = [SuffixBatch.build(model, batch, cache) for batch in batches]
        if any(split is None for split in splits):
            log_probs = model.label_log_probs(dev, progress=False)
        else:
            with torch.inference_mode():
                scores = [split.scores(model, split.embeddings(model)) for split in splits]
            log_probs = torch.cat(scores).float().cpu().log_softmax(-1)
        gold = torch.tensor(dev_targets)
        accuracy = float((log_probs.argmax(-1) == gold).float().mean())
        return accuracy, float(log_probs[torch.arange(len(gold)), gold].mean())

    # ---------------------------------------------------------------------- fit
    def fit(
        self,
        model: PromptModel,
        train: Any,
        unlabeled: Any = None,
        *,
        dev: Any = None,
        targets: Any = None,
        resume_from: str | Path | None = None,
    ) -> PromptModel:
        """Search the triggers on ``train`` (labels, or ``targets``: labels or ``[N, L]`` distributions),
        keep the best set on ``dev`` if given, attach it as :class:`TriggerTokens` and return ``model``."""
        if resume_from is not None:
            raise StrategyError("autoprompt keeps no checkpoints to resume from; rerun the search (same seed)")
        if self.lm_pool is not None and model.head != "causal":
            raise StrategyError(
                f"autoprompt lm_pool={self.lm_pool} needs a causal LM head (a next-token distribution at each "
                f"trigger); this model's head is {model.head!r}: use lm_pool=None"
            )
        rows = as_examples(train) if train is not None else []
        if not rows:
            raise DataError("AutoPrompt.fit needs at least one training example; got none")
        sizes = trigger_sizes(model.template, rows[0])
        n = sum(sizes)
        room = model.max_length - model.table.max_tokens() - 2
        if n > room:
            raise TemplateError(
                f"the template has {n} trigger tokens but max_length={model.max_length} leaves room for at most "
                f"{room} next to the label word and special tokens; use fewer triggers or raise max_length"
            )
        dev_rows = as_examples(dev) if dev is not None else []
        dev_targets = labels_of(dev_rows, model.verbalizer) if dev_rows else []
        target = target_distributions(rows, targets, model.verbalizer)  # [N, L]
        allowed = self.allowed_tokens(model)
        addon = model.attach(TriggerTokens(self._init_ids(model, n, allowed)))
        rng = random.Random(self.seed)
        weight = model.backbone.get_input_embeddings().weight
        self.history_ = []
        cache = PrefixCache()  # the training rows' text before the triggers, run once (causal heads)
        dev_cache = PrefixCache()
        with _frozen(model.backbone):
            score = self._dev_score(model, dev_rows, dev_targets, dev_cache) if dev_rows else None
            best = (score, addon.token_ids.tolist())
            bar = tqdm(range(1, self.iterations + 1), desc="trigger search", unit="iteration")
            for it in bar:
                start = time.perf_counter()
                grad, priors = torch.zeros(n, weight.size(1)), []
                for _ in range(self.accumulation):
                    picked = rng.sample(range(len(rows)), min(self.batch_size, len(rows)))
                    step, prior = self._slot_grad(model, model.encode([rows[i] for i in picked]), target[picked], cache)
                    grad += step
                    priors += [prior] if prior is not None else []
                slot = rng.randrange(n)
                pool = search.pool_mask(torch.stack(priors).mean(0)[slot], allowed, self.lm_pool) if priors else allowed
                found = search.candidates(
                    grad[slot] / self.accumulation, weight.detach().cpu(), allowed & pool, self.n_candidates
                )
                current = int(addon.token_ids[slot])
                found = found[found != current]
                picked = rng.sample(range(len(rows)), min(self.batch_size, len(rows)))
                tokens = torch.cat([torch.tensor([current]), found])
                batch = model.encode([rows[i] for i in picked])
                scores = self.score_tokens(model, batch, slot, tokens, target[picked], cache)
                choice = int(scores[1:].argmax()) + 1 if len(found) else 0
                accepted = bool(scores[choice] > scores[0])
                confirm_score = None
                if accepted and self.confirm:  # the winner again, on a fresh batch, against the current token
                    again = rng.sample(range(len(rows)), min(self.batch_size, len(rows)))
                    pair = torch.tensor([current, int(tokens[choice])])
                    check = self.score_tokens(
                        model, model.encode([rows[i] for i in again]), slot, pair, target[again], cache
                    )
                    confirm_score = (float(check[0]), float(check[1]))
                    accepted = bool(check[1] > check[0])
                if accepted:
                    addon.token_ids[slot] = int(tokens[choice])
                dev_score = None
                if dev_rows and (it % self.dev_every == 0 or it == self.iterations):
                    dev_score = self._dev_score(model, dev_rows, dev_targets, dev_cache)
                    if dev_score > best[0]:
                        best = (dev_score, addon.token_ids.tolist())
                self.history_.append({
                    "iteration": it, "position": slot, "candidate_id": int(tokens[choice]),
                    "candidate": model.tokenizer.convert_ids_to_tokens(int(tokens[choice])),
                    "accepted": accepted, "train_score": float(scores[choice]),
                    "current_score": float(scores[0]), "n_scored": len(tokens), "confirm_scores": confirm_score,
                    "dev_score": None if dev_score is None else dev_score[0],
                    "seconds": time.perf_counter() - start,
                })  # fmt: skip
                shown = {"accepted": sum(h["accepted"] for h in self.history_)}
                if dev_rows:
                    shown["best_dev_accuracy"] = f"{best[0][0]:.3f}"
                bar.set_postfix(shown, refresh=False)
                logger.info("autoprompt iteration %d: %s", it, self.history_[-1])
        self.triggers_ = best[1] if dev_rows else addon.token_ids.tolist()
        model.attach(TriggerTokens(self.triggers_))
        self.verbalizer_ = model.verbalizer
        self.template_ = self._written(model, rows[0], sizes)
        model.refit_calibration(unlabeled)
        return model

    def _written(self, model: PromptModel, example: dict[str, Any], sizes: list[int]) -> Template | None:
        """The template with the trigger words written in; warn where re-tokenizing changes the ids."""
        groups, pos = [], 0
        for size in sizes:
            groups.append(self.triggers_[pos : pos + size])
            pos += size
        words = [model.tokenizer.decode(ids).strip() for ids in groups]
        template = model.template
        try:
            text = search.write_triggers(template.text, words, sizes)
        except TemplateError as err:
            warnings.warn(f"autoprompt: template_ is None: {err}", stacklevel=3)
            return None
        written = Template(text, name=template.name, chat=template.chat, description=template.description)
        ids = model.with_prompt(template=written).encode([example]).input_ids[0].tolist()
        lost = [g for g in groups if not search.contains(ids, g)]
        if lost:
            tokens = [model.tokenizer.convert_ids_to_tokens(g) for g in lost]
            message = (
                f"autoprompt: the trigger tokens {tokens} do not come back when the written-in template "
                f"{text!r} is tokenized again; template_ then shows the model other tokens than the TriggerTokens "
                "add-on does (keep using the add-on, or search with a filter that keeps whole words)"
            )
            logger.warning(message)
            warnings.warn(message, UserWarning, stacklevel=3)
        return written

    # --------------------------------------------------------------- outputs
    def search_label_words(self, model: PromptModel, train: Any, k: int | None = None) -> Verbalizer:
        """AutoPrompt's automatic verbalizer: ``k`` (default ``label_words_k``) words per label for ``model``.

        Uses the model's current triggers (or ``init_token`` everywhere if none is attached).
        """
        rows = as_examples(train)
        if not rows:
            raise DataError("search_label_words needs labelled training examples; got none")
        k = _positive("label_words_k", self.label_words_k if k is None else k)
        targets = labels_of(rows, model.verbalizer)
        allowed = search.token_filter(model.tokenizer, allow_capitalised=self.filter == "default")
        if "slot_embeddings" not in model.addons and any(
            s.kind == "slot" for s in model.template.render(rows[0]).segments
        ):
            model = model.with_prompt()
            n = sum(trigger_sizes(model.template, rows[0]))
            model.attach(TriggerTokens(self._init_ids(model, n, allowed)))
        with _frozen(model.backbone):
            return search_label_words(model, rows, targets, k, allowed, self.seed)

    def to_json(self, path: str | Path) -> Path:
        """Write ``{"triggers": [...], "history": [...]}`` as JSON."""
        return write_text(path, json.dumps({"triggers": self.triggers_, "history": self.history_}, indent=2))

    def save_prompt(self, folder: str | Path, name: str, task: str | None = None) -> Path:
        """Write the found template and the verbalizer it was searched with as catalog YAML under ``folder``.

        ``folder/templates/<task>.yaml`` and ``folder/verbalizers/<task>.yaml`` get entry ``name``;
        ``task`` defaults to the template name's task part (``"sst2/it_was"`` -> ``"sst2"``) or ``"autoprompt"``.
        """
        if self.template_ is None or self.verbalizer_ is None:
            raise StrategyError("save_prompt() needs a finished fit() with a written-in template")
        task = task or (self.template_.name.partition("/")[0] if "/" in self.template_.name else "autoprompt")
        return save_prompt(folder, task, name, self.template_, self.verbalizer_)
