"""PromptModel: a template, a verbalizer and a language model scored as a classifier.

Inference follows the transformers pipeline shape: render + encode (preprocess), run
the LM with the head applied only where it is read (forward), then combine label words,
calibrate and normalise (postprocess). Strategies change the computation only through
:mod:`promptkit.addons` (slot vectors, a key/value prefix, label vectors), attached by role.
"""

from __future__ import annotations

import copy
import inspect
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from promptkit import lm_pass, persistence, precision
from promptkit.addons import AddOn
from promptkit.backbones import DEFAULT_BACKBONE, HeadKind, load_backbone
from promptkit.cloze import ClozeBatch, ClozeEncoder
from promptkit.errors import ConfigError, DataError, EncodingError, check_choice, did_you_mean
from promptkit.examples import as_examples, labels_of
from promptkit.label_words import LabelWordTable
from promptkit.memory import release_freed_memory
from promptkit.model_options import as_kind, check_int, checked_head, checked_max_length
from promptkit.precision import QUANTIZE_MODES
from promptkit.scoring import (
    Combine,
    calibrated,
    combine_words,
    mean_prior,
)
from promptkit.shared_prefix import PrefixReuse, PrefixStore
from promptkit.template import Template, render_all
from promptkit.verbalizer import Label, Verbalizer

logger = logging.getLogger(__name__)
Calibration = Literal["none", "content_free", "batch"]
CALIBRATIONS = ("none", "content_free", "batch")
CONTENT_FREE = ("N/A", "", "[MASK]")
MIN_BATCH_PRIOR = 16  # fewest inputs a batch-calibration prior is estimated on without a fitted prior
_PROGRESS_FROM = 256  # show a progress bar from this many examples on
_CHUNK = 2048  # examples rendered and encoded at a time when scoring: memory stays flat in N


def _derived(index: int, check: Callable[[Any, Any], Any]) -> property:
    """A property over ``PromptModel._prompt[index]`` whose assignment is checked, then rebuilds derived state."""
    return property(lambda self: self._prompt[index], lambda self, value: self._replace(index, check(self, value)))


class PromptModel(torch.nn.Module):
    """Classify examples by scoring label words at a template's mask.

    Args:
        backbone: a Hugging Face masked-LM or causal-LM model.
        tokenizer: its fast tokenizer.
        template: how an example becomes a cloze prompt.
        verbalizer: the labels and their words.
        head: ``"mlm"`` or ``"causal"``; detected from the backbone if None, and must match it.
        calibrate: ``"none"``; ``"content_free"`` (contextual calibration: divide by the
            label distribution the model gives content-free inputs such as ``"N/A"``); or
            ``"batch"`` (divide by the mean label distribution over unlabeled inputs,
            fitted with :meth:`fit_calibration`; without it, estimated on the inputs being
            predicted, with a warning, and refused for fewer than ``MIN_BATCH_PRIOR`` of them).
        combine: how several words of one label are combined, ``"logsumexp"`` or ``"mean"``.
        max_length: most tokens per prompt; longer prompts lose tokens of their longest input.
            None: 512, or the backbone's position limit if that is smaller.
        batch_size: most examples per forward pass when scoring.
        max_batch_tokens: most padded tokens (rows x longest row) per forward pass when
            scoring; prompts are sorted by length, so short prompts share large batches and
            long ones small ones (memory stays flat with mixed lengths). None: no budget.
        reuse_prefix: on a causal LM, run the tokens every prompt of a batch starts with
            (demonstrations, a preamble, a chat header) once and reuse their key/value
            cache (:mod:`promptkit.shared_prefix`; same probabilities). Only at inference;
            masked LMs attend both ways and always run whole rows.
        name_or_path: where the backbone came from (kept when saving without weights).

    Assigning ``template``, ``verbalizer``, ``tokenizer`` or ``max_length`` rebuilds the
    label-word table and the encoder and drops a fitted calibration prior; ``head`` is fixed.

    Example:
        >>> model = PromptModel.from_pretrained(  # doctest: +SKIP
        ...     "smollm2-135m", template=load_template("sst2/it_was"),
        ...     verbalizer=load_verbalizer("sst2/great_terrible"), calibrate="content_free")
        >>> model.predict([{"text": "A gem of a film."}])  # doctest: +SKIP
        [1]
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        tokenizer: Any,
        template: Template,
        verbalizer: Verbalizer,
        *,
        head: HeadKind | None = None,
        calibrate: Calibration = "none",
        combine: Combine = "logsumexp",
        max_length: int | None = None,
        batch_size: int = 64,
        max_batch_tokens: int | None = 4096,
        reuse_prefix: bool = True,
        name_or_path: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(template, Template):
            raise ConfigError(f"template must be a promptkit Template, got {type(template).__name__}")
        if not isinstance(verbalizer, Verbalizer):
            raise ConfigError(f"verbalizer must be a promptkit Verbalizer, got {type(verbalizer).__name__}")
        check_choice("calibrate", calibrate, CALIBRATIONS)
        check_choice("combine", combine, ("logsumexp", "mean"))
        check_int("batch_size", batch_size, 1)
        if max_batch_tokens is not None:
            check_int("max_batch_tokens", max_batch_tokens, 1)
        if not isinstance(reuse_prefix, bool):
            raise ConfigError(f"PromptModel reuse_prefix={reuse_prefix!r} is invalid: expected True or False")
        self.backbone = backbone
        self._head = checked_head(backbone, head)
        self.calibrate = calibrate
        self.combine = combine
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.prefix_reuse = PrefixReuse(enabled=reuse_prefix)
        self.name_or_path = name_or_path
        self.addons = torch.nn.ModuleDict()
        self.calibration_: torch.Tensor | None = None
        self._prompt = (tokenizer, template, verbalizer, checked_max_length(backbone, max_length))
        self._rebuild()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_BACKBONE,
        *,
        template: Template | None = None,
        verbalizer: Verbalizer | None = None,
        head: HeadKind | None = None,
        calibrate: Calibration | None = None,
        combine: Combine | None = None,
        max_length: int | None = None,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        reuse_prefix: bool | None = None,
        dtype: str | torch.dtype | None = None,
        quantize: str | None = None,
        device: str | torch.device | None = None,
        **unknown: Any,
    ) -> PromptModel:
        """Load a backbone (alias, hub name or folder) or a folder saved by :meth:`save_pretrained`.

        Options left as None keep a saved model's settings (or the defaults for a new one);
        ``template``/``verbalizer`` replace a saved model's (its calibration is then dropped).
        ``dtype="bfloat16"`` loads the weights in bfloat16; ``quantize="int8"`` stores the body's
        linear weights as int8 for inference (:mod:`promptkit.precision`). Any other keyword is an
        error that names the closest valid one.
        """
        if unknown:
            valid = [p for p in inspect.signature(cls.from_pretrained).parameters][1:-1]  # not name_or_path, unknown
            name = sorted(unknown)[0]
            raise ConfigError(
                f"from_pretrained() has no option {name!r}.{did_you_mean(name, valid)} Valid options: {valid}"
            )
        options = {
            "calibrate": calibrate, "combine": combine, "max_length": max_length, "batch_size": batch_size,
            "max_batch_tokens": max_batch_tokens, "reuse_prefix": reuse_prefix,
        }  # fmt: skip
        options = {k: v for k, v in options.items() if v is not None}
        if quantize is not None:
            check_choice("quantize", quantize, QUANTIZE_MODES)
        if persistence.is_saved_model(name_or_path):
            model = persistence.load(
                cls, name_or_path, template=template, verbalizer=verbalizer, head=head, dtype=dtype, device=device,
                options=options,
            )  # fmt: skip
        else:
            persistence.check_not_a_broken_save(name_or_path)
            if template is None or verbalizer is None:
                raise persistence.missing_prompt_error(name_or_path)
            backbone, tokenizer, head = load_backbone(name_or_path, head=head, dtype=dtype, quantize=quantize)
            model = cls(backbone, tokenizer, template, verbalizer, head=head, name_or_path=name_or_path, **options)
            return model.to(device) if device is not None else model
        if quantize is not None:
            precision.quantize(model.backbone, quantize)
        return model

    # ------------------------------------------------------------ derived state
    def _rebuild(self) -> None:
        """Recompute everything derived from tokenizer, template, verbalizer and max_length."""
        tokenizer, template, verbalizer, max_length = self._prompt
        self.table = LabelWordTable(verbalizer, tokenizer)
        self.table.max_tokens()  # tokenizes every word now: a word no label can be told apart by fails here
        self.encoder = ClozeEncoder(tokenizer, self.head, self.table, max_length)
        word_label = torch.tensor(self.table.word_label, device=self.device)
        self.register_buffer("word_label", word_label, persistent=False)
        self.calibration_ = None
        for addon in self.addons.values():
            addon.check(self)

    def _replace(self, index: int, value: Any) -> None:
        old = self._prompt
        self._prompt = (*old[:index], value, *old[index + 1 :])
        try:
            self._rebuild()
        except Exception:
            self._prompt = old
            self._rebuild()
            raise

    tokenizer = _derived(0, lambda model, value: value)
    template = _derived(1, lambda model, value: as_kind(value, Template))
    verbalizer = _derived(2, lambda model, value: as_kind(value, Verbalizer))
    max_length = _derived(3, lambda model, value: checked_max_length(model.backbone, value))

    @property
    def head(self) -> HeadKind:
        """``"mlm"`` or ``"causal"``: how the backbone scores the mask (fixed at construction)."""
        return self._head

    @head.setter
    def head(self, value: Any) -> None:
        raise ConfigError("PromptModel.head is fixed by the backbone; build a new PromptModel for another backbone")

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    # ----------------------------------------------------------------- add-ons
    def attach(self, addon: AddOn) -> AddOn:
        """Attach ``addon`` under its role (replacing one of the same role) and return it."""
        if not isinstance(addon, AddOn):
            raise ConfigError(f"attach() takes a promptkit.addons.AddOn, got {type(addon).__name__}")
        addon.check(self)
        self.addons[addon.role] = addon.to(self.device)
        return addon

    def detach(self, role: str) -> AddOn | None:
        """Remove and return the add-on of ``role`` (None if there is none)."""
        return self.addons.pop(role) if role in self.addons else None

    def with_prompt(self, template: Template | None = None, verbalizer: Verbalizer | None = None) -> PromptModel:
        """A model over the same backbone and add-ons (shared, not copied) with another template or verbalizer.

        Used by ensembles (PET) and template search: one set of weights, many prompts. Its
        calibration prior is not fitted yet.
        """
        model = type(self)(
            self.backbone, self.tokenizer, template or self.template, verbalizer or self.verbalizer,
            head=self.head, calibrate=self.calibrate, combine=self.combine, max_length=self.max_length,
            batch_size=self.batch_size, max_batch_tokens=self.max_batch_tokens,
            reuse_prefix=self.prefix_reuse.enabled, name_or_path=self.name_or_path,
        )  # fmt: skip
        model.prefix_reuse.min_tokens = self.prefix_reuse.min_tokens
        for addon in self.addons.values():
            model.attach(addon)
        return model

    def clone(self) -> PromptModel:
        """An independent deep copy (backbone and add-ons) to train without touching this model."""
        model = self.with_prompt()
        model.backbone = copy.deepcopy(self.backbone)
        model.addons = copy.deepcopy(self.addons)
        model.calibration_ = None if self.calibration_ is None else self.calibration_.clone()
        return model

    # ------------------------------------------------------------------ forward
    def encode(self, examples: Any) -> ClozeBatch:
        """Render and encode examples into one :class:`ClozeBatch` (on the CPU)."""
        return self.encoder.encode(render_all(self.template, as_examples(examples)))

    def input_embeddings(self, batch: ClozeBatch) -> torch.Tensor:
        """``[R, T, H]`` input embeddings of ``batch``, slot positions filled by the slot add-on.

        Take gradients at ``batch.slot_positions`` of these (``requires_grad_()``, then
        :meth:`forward` with ``inputs_embeds=``), e.g. for a gradient-guided trigger search.
        """
        batch = batch.to(self.device)
        embeds = self.backbone.get_input_embeddings()(batch.input_ids)  # [R, T, H]
        if batch.slot_positions.shape[1] == 0:
            return embeds
        vectors = next((v for a in self._hooks() if (v := a.slot_vectors(self)) is not None), None)
        if vectors is None:
            raise ConfigError(
                f"template {self.template.name!r} has soft/trigger slots but no add-on fills them; train it with "
                "the soft_prompt strategy or attach an add-on whose slot_vectors() returns the [S, H] vectors"
            )
        index = batch.slot_positions.unsqueeze(-1).expand(-1, -1, embeds.size(-1))  # [R, S, H]
        return embeds.scatter(1, index, vectors.to(embeds.dtype).expand(embeds.size(0), -1, -1))

    def forward(
        self, batch: ClozeBatch, inputs_embeds: torch.Tensor | None = None, *, prefix_store: PrefixStore | None = None
    ) -> torch.Tensor:
        """Label log-scores ``[B, n_labels]`` (uncalibrated, not normalised over labels).

        Args:
            batch: an encoded batch (:meth:`encode`).
            inputs_embeds: ``[R, T, H]`` to use instead of :meth:`input_embeddings` (e.g. a
                tensor you take gradients of).
            prefix_store: shared-prefix caches to keep across calls of one scoring pass
                (:mod:`promptkit.shared_prefix`); a new one per call by default.
        """
        batch = batch.to(self.device)
        store = prefix_store if prefix_store is not None else PrefixStore()
        words, first = lm_pass.word_scores(self, batch, inputs_embeds, store)  # [B * W], [B, H']
        scores = combine_words(
            words.view(batch.n_examples, batch.n_words), self.word_label, len(self.verbalizer.labels), self.combine
        )  # [B, L]
        for addon in self._hooks():
            scores = addon.label_scores(self, batch, scores, first)
        return scores

    def _hooks(self) -> list[AddOn]:
        return [self.addons[role] for role in sorted(self.addons)]

    def batches(self, examples: Any) -> Iterator[tuple[list[int], ClozeBatch]]:
        """Yield ``(row indices, encoded batch)`` covering ``examples``.

        Examples are rendered and encoded ``_CHUNK`` at a time (memory flat in their number),
        sorted by token length within the chunk, and cut into batches of at most
        ``batch_size`` examples and ``max_batch_tokens`` padded tokens (an example over the
        budget on its own gets a batch of its own).
        """
        rows = as_examples(examples)
        budget = self.max_batch_tokens
        for start in range(0, len(rows), _CHUNK):
            parts = self.encoder.encode_each(render_all(self.template, rows[start : start + _CHUNK]))
            order = sorted(range(len(parts)), key=lambda i: parts[i].width)
            chunk: list[int] = []
            n_rows = 0
            for i in order:  # widths ascending: the example added is the widest so far
                grown = (n_rows + len(parts[i].ids)) * parts[i].width
                if chunk and (len(chunk) == self.batch_size or (budget is not None and grown > budget)):
                    yield [start + j for j in chunk], self.encoder.collate([parts[j] for j in chunk])
                    chunk, n_rows = [], 0
                chunk.append(i)
                n_rows += len(parts[i].ids)
            if chunk:
                yield [start + j for j in chunk], self.encoder.collate([parts[j] for j in chunk])

    def label_log_probs(self, examples: Any, *, progress: bool | None = None) -> torch.Tensor:
        """``[N, n_labels]`` label log-probabilities before calibration, in input order."""
        rows = as_examples(examples)
        out = torch.empty(len(rows), len(self.verbalizer.labels))
        show = len(rows) >= _PROGRESS_FROM if progress is None else progress
        store = PrefixStore()
        with torch.inference_mode(), tqdm(total=len(rows), desc="scoring", unit="ex", disable=not show) as bar:
            for chunk, batch in self.batches(rows):
                out[chunk] = self.forward(batch, prefix_store=store).float().cpu()
                release_freed_memory()  # memory.py: keeps the heap from creeping up batch after batch
                bar.update(len(chunk))
        return out.log_softmax(-1)

    # --------------------------------------------------------------- calibration
    def fit_calibration(self, unlabeled: Any = None) -> PromptModel:
        """Fix the calibration prior: from content-free inputs, or from ``unlabeled`` examples."""
        if self.calibrate == "content_free":
            self.calibration_ = self.content_free_prior()
        elif self.calibrate == "batch":
            rows = None if unlabeled is None else as_examples(unlabeled)
            if not rows:
                raise DataError(
                    f"calibrate='batch' needs unlabeled examples to estimate the prior, got {unlabeled!r}; "
                    "call fit_calibration(examples) with at least one example (a few hundred is typical)"
                )
            self.calibration_ = mean_prior(self.label_log_probs(rows))
        return self

    def refit_calibration(self, unlabeled: Any = None) -> None:
        """After the weights changed: drop the old prior and refit it where possible.

        A content-free prior is always refitted; a batch prior only when ``unlabeled``
        is given (otherwise it is estimated on the inputs predicted).
        """
        self.calibration_ = None
        if self.calibrate == "content_free" or (self.calibrate == "batch" and unlabeled is not None):
            self.fit_calibration(unlabeled)

    def content_free_prior(self) -> torch.Tensor:
        """``[n_labels]`` log of the mean label distribution for content-free inputs (``"N/A"`` ...)."""
        fields = sorted(self.template.variables)
        special = set(self.tokenizer.all_special_tokens)  # kept as before: "[MASK]" is skipped for BERT tokenizers
        scores = []
        for text in CONTENT_FREE:
            if text in special:
                continue
            try:
                scores.append(self.label_log_probs([dict.fromkeys(fields, text)], progress=False))
            except EncodingError:  # "" leaves a causal LM nothing before "{{ text }} {{ mask }}"'s mask
                continue
        if not scores:
            raise EncodingError(f"template {self.template.name!r} cannot score any content-free input {CONTENT_FREE}")
        return mean_prior(torch.cat(scores))

    def _calibrated(self, log_probs: torch.Tensor) -> torch.Tensor:
        if self.calibrate == "none" or len(log_probs) == 0:
            return log_probs
        if self.calibration_ is None and self.calibrate == "content_free":
            self.fit_calibration()
        if self.calibration_ is None:  # batch calibration without a fitted prior
            if len(log_probs) < MIN_BATCH_PRIOR:
                raise DataError(
                    f"calibrate='batch' has no fitted prior and {len(log_probs)} input(s) are too few to estimate "
                    f"one on (at least {MIN_BATCH_PRIOR}); call model.fit_calibration(unlabeled) first"
                )
            warnings.warn(
                "calibrate='batch' without a fitted prior: estimating it on the inputs being predicted; "
                "call model.fit_calibration(unlabeled) for predictions that do not depend on the batch",
                stacklevel=3,
            )
        prior = self.calibration_ if self.calibration_ is not None else mean_prior(log_probs)
        return calibrated(log_probs, prior)

    # ------------------------------------------------------------ estimator API
    def predict_proba(self, examples: Any, *, progress: bool | None = None) -> np.ndarray:
        """``[N, n_labels]`` label probabilities, columns in ``verbalizer.labels`` order."""
        return self._calibrated(self.label_log_probs(examples, progress=progress)).exp().numpy()

    def predict(self, examples: Any, *, progress: bool | None = None) -> list[Label]:
        """The most probable label of each example."""
        proba = self.predict_proba(examples, progress=progress)
        return [self.verbalizer.labels[i] for i in proba.argmax(-1)] if len(proba) else []

    def score(self, examples: Any, *, label_key: str = "label", progress: bool | None = None) -> float:
        """Accuracy on labelled examples."""
        rows = as_examples(examples)
        if not rows:
            raise DataError("score() needs at least one labelled example; got none")
        targets = labels_of(rows, self.verbalizer, label_key)
        predicted = self.predict_proba(rows, progress=progress).argmax(-1)
        return float((predicted == torch.as_tensor(targets)).float().mean())

    def save_pretrained(self, directory: str, *, include_backbone: bool = True) -> None:
        """Save template, verbalizer, options, calibration, add-ons and (by default) the backbone."""
        persistence.save(self, directory, include_backbone=include_backbone)
