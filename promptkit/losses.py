"""What :func:`promptkit.train.train` minimises: a small protocol and three losses.

The loop hands a loss the label log-probabilities of a forward batch, ``[b, n_labels]``
(normalised over the labels), and the rows' target distributions (one-hot for hard
labels); the loss returns one value per example and the loop weights their sum so the
gradient is the mean over the optimizer step's batch. A loss may also add one
batch-level *auxiliary* term per optimizer step (PET's language-modelling term), and
describes itself as JSON for the checkpoint manifest, so a resumed run uses the same loss.

- :class:`CrossEntropy`: hard or soft targets; the default.
- :class:`Distillation`: KL to a teacher's temperature-softened distribution, times T².
- :class:`AuxiliaryLM`: a base loss plus ``alpha`` times a language-modelling loss on
  unlabelled examples rendered through the model's template.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from promptkit.errors import ConfigError, DataError
from promptkit.examples import as_examples
from promptkit.template import render_all

if TYPE_CHECKING:
    from promptkit.model import PromptModel

IGNORE = -100  # label of a position without an LM target (the transformers convention)
_CUT = "\x00"  # stands for the mask while cutting a causal prompt; never in rendered text


@runtime_checkable
class Loss(Protocol):
    """The interface :func:`~promptkit.train.train` calls; any object with these methods fits."""

    def __call__(self, log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-example losses ``[b]`` from label log-probabilities and target distributions, both ``[b, L]``."""
        ...

    def auxiliary(self, model: PromptModel, step: int) -> torch.Tensor | None:
        """A scalar added once to optimizer step ``step`` (0-based), or None for none."""
        ...

    def config(self) -> dict[str, Any]:
        """A JSON-ready description, stored in checkpoints so a resumed run uses the same loss."""
        ...


class CrossEntropy:
    """Cross-entropy ``-sum_l targets[l] * log_probs[l]`` against hard (one-hot) or soft targets.

    With one-hot targets this is the negative log-likelihood of the gold label.
    """

    def __call__(self, log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -(targets * log_probs).sum(-1)

    def auxiliary(self, model: PromptModel, step: int) -> torch.Tensor | None:
        return None

    def config(self) -> dict[str, Any]:
        return {"name": "cross_entropy"}


class Distillation:
    """Knowledge distillation (Hinton et al., 2015): ``T² * KL(teacher_T || student_T)``.

    The student's softened distribution is ``softmax(log_probs / T)``. The targets are the
    teacher's *probabilities* ``p``; they are softened to ``softmax(log(p) / T)``, i.e.
    ``p^(1/T)`` renormalised. For a teacher with logits ``z`` (``p = softmax(z)``) this equals
    ``softmax(z / T)``, the softening PET applies to its ensemble's logits when distilling
    with T = 2 (Schick & Schütze, 2021). The T² factor keeps the gradient's scale, about
    ``T * (student_T - teacher_T)`` per logit, comparable across temperatures.

    A zero teacher probability stays exactly zero after softening (``0^(1/T) = 0``) and
    adds nothing to the KL (the ``0 * log 0 = 0`` convention), so zeros give finite losses
    and gradients instead of NaN; nothing is clamped.

    Args:
        temperature: T > 0; higher T spreads the distributions and passes on more of the
            teacher's ranking of the wrong labels. T = 1 is the plain KL.
    """

    def __init__(self, temperature: float = 2.0) -> None:
        self.temperature = _number("Distillation.temperature", temperature, "> 0", "PET distils with 2.0")

    def __call__(self, log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        student = (log_probs / t).log_softmax(-1)  # [b, L]
        log_teacher = (targets.log() / t).log_softmax(-1)  # zeros give -inf: probability 0
        teacher = log_teacher.exp()
        kept = teacher > 0
        log_teacher = torch.where(kept, log_teacher, 0.0)  # no -inf left to reach a product or a gradient
        return torch.where(kept, teacher * (log_teacher - student), 0.0).sum(-1) * (t * t)

    def auxiliary(self, model: PromptModel, step: int) -> torch.Tensor | None:
        return None

    def config(self) -> dict[str, Any]:
        return {"name": "distillation", "temperature": self.temperature}


@dataclass(frozen=True)
class LMBatch:
    """The language-modelling inputs of one optimizer step.

    Attributes:
        rows: indices of the unlabelled rows drawn, in batch order.
        input_ids: ``[b, T]`` token ids as the model reads them (MLM: after masking), right-padded.
        attention_mask: ``[b, T]``; 0 on padding.
        labels: ``[b, T]``; the token to predict, ``-100`` where there is none. MLM: the
            original token at the chosen positions. Causal: the token itself; position
            ``t`` is predicted from positions ``< t``.
        causal: whether ``labels`` are next-token targets.
    """

    rows: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    causal: bool


class AuxiliaryLM:
    """PET's auxiliary language modelling: ``base`` loss + ``alpha`` * LM loss on unlabelled text.

    Each optimizer step draws ``batch_size`` unlabelled rows and renders them through the
    model's template. A masked LM reads the prompt with the template's mask shown as the
    tokenizer's mask token, and then BERT's masking: 15% of the other non-special tokens
    are chosen (of those 80% become the mask token, 10% a random token, 10% stay); the loss
    is the cross-entropy at the chosen positions, so the template's own mask is never a
    target. A causal LM reads the prompt's text before the mask (what it reads when
    classifying) with the next-token loss. Either way the loss is the mean over the batch's
    target tokens. Rows and masks for step ``s`` come from a generator seeded with
    ``(seed, s)``: a resumed run draws exactly what an uninterrupted one does.

    The term runs the backbone alone (no prefix-tuning cache or soft-prompt vectors). Under
    several processes each computes it on the same batch, and the averaged gradient is the
    term's own.

    Args:
        unlabeled: rows (dicts, a DataFrame, ...) with the template's fields.
        alpha: weight of the LM loss, >= 0 (0 turns it off). The default 1e-4 is PET's:
            ``--alpha 0.9999`` weights ``alpha * CE + (1 - alpha) * LM`` there, i.e. the
            paper's L = (1 - 1e-4) L_CE + 1e-4 L_MLM, a ratio of 1.0001e-4 to ours.
        base: the loss on the labelled batch; :class:`CrossEntropy` if None.
        batch_size: unlabelled rows per optimizer step (PET's default: 4); all rows if fewer.
        seed: seeds the draws together with the step.
    """

    mask_rate, replace_rate, random_rate = 0.15, 0.8, 0.1  # BERT: chosen; of those -> mask; -> random

    def __init__(
        self, unlabeled: Any, alpha: float = 1e-4, base: Loss | None = None, batch_size: int = 4, seed: int = 0
    ) -> None:
        self.unlabeled = as_examples(unlabeled)
        if not self.unlabeled:
            raise DataError("AuxiliaryLM(unlabeled=...) got no rows; pass at least one unlabelled example (a dict)")
        self.alpha = _number("AuxiliaryLM.alpha", alpha, ">= 0", "PET uses 1e-4; 0 turns the LM term off")
        self.base = CrossEntropy() if base is None else base
        if not isinstance(self.base, Loss):
            raise ConfigError(
                f"AuxiliaryLM.base={base!r} is invalid: expected a Loss (__call__, auxiliary, config), "
                "e.g. CrossEntropy() or Distillation()"
            )
        for name, value, low in (("batch_size", batch_size, 1), ("seed", seed, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"AuxiliaryLM.{name}={value!r} is invalid: expected an int >= {low}")
        self.batch_size, self.seed = batch_size, seed
        self._rendered: tuple[Any, ...] = (None, None, None, [])  # (template, head, mask token, texts)

    def __call__(self, log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.base(log_probs, targets)

    def auxiliary(self, model: PromptModel, step: int) -> torch.Tensor | None:
        lm = self.lm_loss(model, step) if self.alpha > 0 else None
        extra = self.base.auxiliary(model, step)
        terms = [t for t in (None if lm is None else self.alpha * lm, extra) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def config(self) -> dict[str, Any]:
        data = hashlib.sha256(json.dumps(self.unlabeled, sort_keys=True, default=str).encode()).hexdigest()
        return {"name": "auxiliary_lm", "alpha": self.alpha, "batch_size": self.batch_size, "seed": self.seed,
                "base": self.base.config(), "unlabeled": {"rows": len(self.unlabeled), "sha256": data}}  # fmt: skip

    def lm_loss(self, model: PromptModel, step: int) -> torch.Tensor | None:
        """The unweighted LM loss of step ``step``; None if its batch has no token to predict."""
        batch = self.batch(model, step)
        labels = batch.labels[:, 1:] if batch.causal else batch.labels
        if not (labels != IGNORE).any():
            return None
        device = model.device
        options = {"use_cache": False} if batch.causal else {}
        logits = model.backbone(
            input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), **options
        ).logits  # [b, T, V]
        if batch.causal:
            logits = logits[:, :-1]
        labels = labels.to(device)
        where = labels != IGNORE
        return torch.nn.functional.cross_entropy(logits[where].float(), labels[where])

    def batch(self, model: PromptModel, step: int) -> LMBatch:
        """Draw and prepare step ``step``'s unlabelled batch (on the CPU); the same for the same seed and step."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)
        rows = torch.randperm(len(self.unlabeled), generator=generator)[: self.batch_size].tolist()
        texts = self._texts(model)
        encoded = model.tokenizer([texts[i] for i in rows], truncation=True, max_length=model.max_length)
        ids, attention = _pad(encoded["input_ids"], model.encoder.pad_id)
        if model.head != "mlm":
            return LMBatch(rows, ids, attention, ids.masked_fill(attention == 0, IGNORE), causal=True)
        inputs, labels = self._mask(model, ids, attention, generator)
        return LMBatch(rows, inputs, attention, labels, causal=False)

    def _texts(self, model: PromptModel) -> list[str]:
        """Every unlabelled row as the LM reads it; rendered once per template, head and tokenizer."""
        mask = model.tokenizer.mask_token
        if self._rendered[0] is not model.template or self._rendered[1:3] != (model.head, mask):
            prompts = render_all(model.template, self.unlabeled)
            if model.head == "mlm":
                texts = [p.to_text(mask) for p in prompts]
            else:
                texts = [p.to_text(_CUT).split(_CUT)[0].rstrip() for p in prompts]
            self._rendered = (model.template, model.head, mask, texts)
        return self._rendered[3]

    def _mask(
        self, model: PromptModel, ids: torch.Tensor, attention: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's masking of ``ids``; special tokens (the template's mask among them) and padding are never chosen."""
        tokenizer = model.tokenizer
        special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids)) | (attention == 0)
        chosen = (torch.rand(ids.shape, generator=generator) < self.mask_rate) & ~special
        action = torch.rand(ids.shape, generator=generator)
        vocab = min(len(tokenizer), model.backbone.get_input_embeddings().num_embeddings)
        random_ids = torch.randint(vocab, ids.shape, generator=generator)
        inputs = ids.masked_fill(chosen & (action < self.replace_rate), tokenizer.mask_token_id)
        swap = chosen & (action >= self.replace_rate) & (action < self.replace_rate + self.random_rate)
        inputs = torch.where(swap, random_ids, inputs)
        return inputs, ids.masked_fill(~chosen, IGNORE)


def _pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into ``[b, T]`` ids and attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, seq in enumerate(sequences):
        ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[r, : len(seq)] = 1
    return ids, attention


def _number(name: str, value: Any, bound: str, hint: str) -> float:
    """``value`` as a float if it is a finite real number ``bound`` (``"> 0"`` or ``">= 0"``); else a ConfigError."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if bound == "> 0" else value < 0):
        raise ConfigError(f"{name}={value!r} is invalid: expected a finite number {bound} ({hint})")
    return float(value)
