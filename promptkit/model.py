"""PromptModel: a template, a verbalizer and a language model scored as a classifier.

Inference follows the transformers pipeline shape: render + encode (preprocess), run
the LM with the head applied only where it is read (forward), then combine label words,
calibrate and normalise (postprocess).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from promptkit import persistence
from promptkit.backbones import DEFAULT_BACKBONE, HeadKind, load_backbone
from promptkit.cloze import ClozeBatch, ClozeEncoder
from promptkit.errors import PromptkitError, check_choice
from promptkit.examples import as_examples, labels_of
from promptkit.label_words import LabelWordTable
from promptkit.prefix import cache_argument
from promptkit.scoring import (
    Combine,
    calibrated,
    combine_words,
    head_only_at,
    mean_prior,
    output_features,
    word_log_probs,
)
from promptkit.template import Template, render_all
from promptkit.verbalizer import Label, Verbalizer

logger = logging.getLogger(__name__)
Calibration = Literal["none", "content_free", "batch"]
CONTENT_FREE = ("N/A", "", "[MASK]")
_PROGRESS_FROM = 256  # show a progress bar from this many examples on


class PromptModel(torch.nn.Module):
    """Classify examples by scoring label words at a template's mask.

    Args:
        backbone: a Hugging Face masked-LM or causal-LM model.
        tokenizer: its fast tokenizer.
        template: how an example becomes a cloze prompt.
        verbalizer: the labels and their words.
        head: ``"mlm"`` or ``"causal"``; detected from the backbone if None.
        calibrate: ``"none"``; ``"content_free"`` (contextual calibration: divide by the
            label distribution the model gives content-free inputs such as ``"N/A"``); or
            ``"batch"`` (divide by the mean label distribution over unlabeled inputs,
            fitted with :meth:`fit_calibration`, else estimated on the inputs predicted).
        combine: how several words of one label are combined, ``"logsumexp"`` or ``"mean"``.
        max_length: most tokens per prompt; longer prompts lose tokens of their longest input.
        batch_size: examples per forward pass.
        name_or_path: where the backbone came from (kept when saving without weights).

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
        max_length: int = 512,
        batch_size: int = 32,
        name_or_path: str | None = None,
    ) -> None:
        super().__init__()
        check_choice("calibrate", calibrate, ("none", "content_free", "batch"))
        check_choice("combine", combine, ("logsumexp", "mean"))
        if max_length < 8 or batch_size < 1:
            raise PromptkitError(f"need max_length >= 8 and batch_size >= 1, got {max_length} and {batch_size}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.template = template
        self.verbalizer = verbalizer
        self.head = head or ("causal" if backbone.can_generate() else "mlm")
        self.calibrate = calibrate
        self.combine = combine
        self.max_length = max_length
        self.batch_size = batch_size
        self.name_or_path = name_or_path
        self.table = LabelWordTable(verbalizer, tokenizer)
        self.encoder = ClozeEncoder(tokenizer, self.head, self.table, max_length)
        self.register_buffer("word_label", torch.tensor(self.table.word_label), persistent=False)
        self.calibration_: torch.Tensor | None = None
        # Vectors for the template's {{ soft(n) }} / {{ trigger(n) }} slots: a module returning [S, H],
        # set by a strategy (soft prompts, AutoPrompt); None when the template has no slots.
        self.slot_embeddings: torch.nn.Module | None = None
        # Replaces the label words' vocabulary rows when set (soft verbalizer): maps the features the
        # vocabulary projection would see at the predicted position, [B, H'], to label scores [B, L].
        self.label_head: torch.nn.Module | None = None
        # Per-layer key/value prefix (prefix tuning, causal LMs): a PrefixTuning module, set by a strategy.
        self.prefix: torch.nn.Module | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_BACKBONE,
        *,
        template: Template | None = None,
        verbalizer: Verbalizer | None = None,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        **options: Any,
    ) -> PromptModel:
        """Load a backbone (alias, hub name or folder) or a folder saved by :meth:`save_pretrained`.

        ``options`` are the keyword arguments of :class:`PromptModel` (``calibrate``,
        ``combine``, ``max_length``, ``batch_size``, ``head``); anything else is an error.
        """
        if persistence.is_saved_model(name_or_path):
            return persistence.load(
                cls, name_or_path, template=template, verbalizer=verbalizer, dtype=dtype, device=device, **options
            )
        if template is None or verbalizer is None:
            raise PromptkitError("from_pretrained(backbone) needs template=... and verbalizer=...")
        backbone, tokenizer, head = load_backbone(name_or_path, head=options.pop("head", None), dtype=dtype)
        model = cls(backbone, tokenizer, template, verbalizer, head=head, name_or_path=name_or_path, **options)
        return model.to(device) if device is not None else model

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    # ------------------------------------------------------------------ forward
    def encode(self, examples: Any) -> ClozeBatch:
        """Render and encode examples into one :class:`ClozeBatch` (on the CPU)."""
        return self.encoder.encode(render_all(self.template, as_examples(examples)))

    def forward(self, batch: ClozeBatch) -> torch.Tensor:
        """Label log-scores ``[B, n_labels]`` (uncalibrated, not normalised over labels)."""
        batch = batch.to(self.device)
        with head_only_at(self.backbone, batch.positions), output_features(self.backbone) as features:
            logits = self.backbone(**self._inputs(batch), **self._attention(batch), use_cache=False).logits
        # logits: [R, P, V]
        if self.label_head is not None:  # soft verbalizer: label vectors scored where the word is predicted
            return self.label_head(features[0][batch.example_rows, 0]).log_softmax(-1)  # [B, L]
        words = word_log_probs(logits, batch.gather, batch.cell, batch.n_examples * batch.n_words)
        words = words.view(batch.n_examples, batch.n_words)  # [B, W]
        return combine_words(words, self.word_label, len(self.verbalizer.labels), self.combine)

    def batches(self, examples: Any) -> Iterator[tuple[list[int], ClozeBatch]]:
        """Yield ``(row indices, encoded batch)``; similar lengths share a batch (less padding)."""
        prompts = render_all(self.template, as_examples(examples))
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].to_text()))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            yield chunk, self.encoder.encode([prompts[i] for i in chunk])

    def _inputs(self, batch: ClozeBatch) -> dict[str, torch.Tensor]:
        """Token ids, or embeddings with the slot positions replaced by ``slot_embeddings``."""
        if batch.slot_positions.shape[1] == 0:
            return {"input_ids": batch.input_ids}
        if self.slot_embeddings is None:
            raise PromptkitError(
                f"template {self.template.name!r} has soft/trigger slots but the model has no slot_embeddings; "
                "train it with the soft_prompt strategy or set model.slot_embeddings"
            )
        embeds = self.backbone.get_input_embeddings()(batch.input_ids)  # [R, T, H]
        vectors = self.slot_embeddings().to(embeds.dtype)  # [S, H]
        index = batch.slot_positions.unsqueeze(-1).expand(-1, -1, embeds.size(-1))  # [R, S, H]
        return {"inputs_embeds": embeds.scatter(1, index, vectors.expand(embeds.size(0), -1, -1))}

    def _attention(self, batch: ClozeBatch) -> dict[str, Any]:
        """The attention mask, and with a prefix (prefix tuning) its key/value cache and a mask widened by it."""
        mask = batch.attention_mask  # [R, T]
        if self.prefix is None:
            return {"attention_mask": mask}
        cache = self.prefix.cache(mask.size(0), self.backbone.config, self.backbone.dtype)
        mask = torch.cat([mask.new_ones(mask.size(0), self.prefix.n_tokens), mask], dim=1)  # [R, n + T]
        return {"attention_mask": mask, cache_argument(self.backbone): cache}

    def label_log_probs(self, examples: Any, *, progress: bool | None = None) -> torch.Tensor:
        """``[N, n_labels]`` label log-probabilities before calibration, in input order."""
        rows = as_examples(examples)
        out = torch.empty(len(rows), len(self.verbalizer.labels))
        show = len(rows) >= _PROGRESS_FROM if progress is None else progress
        n_batches = -(-len(rows) // self.batch_size)
        with torch.inference_mode():
            for chunk, batch in tqdm(
                self.batches(rows), total=n_batches, desc="scoring", unit="batch", disable=not show
            ):
                out[chunk] = self.forward(batch).float().cpu()
        return out.log_softmax(-1)

    # --------------------------------------------------------------- calibration
    def fit_calibration(self, unlabeled: Any = None) -> PromptModel:
        """Fix the calibration prior: from content-free inputs, or from ``unlabeled`` examples."""
        if self.calibrate == "content_free":
            self.calibration_ = self.content_free_prior()
        elif self.calibrate == "batch":
            if unlabeled is None:
                raise PromptkitError("calibrate='batch' needs unlabeled examples: fit_calibration(examples)")
            self.calibration_ = mean_prior(self.label_log_probs(unlabeled))
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
        special = set(self.tokenizer.all_special_tokens)  # "[MASK]" is a real mask for a BERT tokenizer
        free = [dict.fromkeys(fields, text) for text in CONTENT_FREE if text not in special]
        return mean_prior(self.label_log_probs(free, progress=False))

    def _calibrated(self, log_probs: torch.Tensor) -> torch.Tensor:
        if self.calibrate == "none" or len(log_probs) == 0:
            return log_probs
        if self.calibration_ is None and self.calibrate == "content_free":
            self.fit_calibration()
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
        targets = labels_of(rows, self.verbalizer, label_key)
        predicted = self.predict_proba(rows, progress=progress).argmax(-1)
        return float((predicted == np.asarray(targets)).mean()) if rows else float("nan")

    def save_pretrained(self, directory: str, *, include_backbone: bool = True) -> None:
        """Save template, verbalizer, options, calibration and (by default) the backbone."""
        persistence.save(self, directory, include_backbone=include_backbone)
