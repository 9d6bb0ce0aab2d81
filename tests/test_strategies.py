"""Strategy registry, zero_shot and finetune (full and LoRA) on tiny random-init models."""

from __future__ import annotations

import copy
import inspect
import sys

import numpy as np
import pytest
import torch
from _train_worker import KEYWORD, TEMPLATE, VERBALIZER

from promptkit import BackboneError, PromptkitError, PromptModel, Template
from promptkit.checkpoint import trainable_state
from promptkit.strategies import (
    Finetune,
    LoraSettings,
    StrategyError,
    get_strategy,
    list_strategies,
    register,
    registry,
)
from promptkit.train_config import ConfigError, TrainConfig

FAST = {"learning_rate": 1e-2, "batch_size": 8, "max_steps": 30, "progress": False}
# Strategies that need template features the shared TEMPLATE lacks get their own in the contract test.
CONTRACT_TEMPLATES = {
    "soft_prompt": Template("{{ soft(2) }} {{ text }}. It was {{ mask }}"),
    "autoprompt": Template("{{ text }}. {{ trigger(2) }} It was {{ mask }}"),
}
UNTRAINED = {"zero_shot", "autoprompt"}  # no TrainConfig: zero-shot trains nothing, AutoPrompt searches tokens


@pytest.fixture
def causal(tiny_causal, bpe_tokenizer):
    return PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)


@pytest.fixture
def saved_base(tiny_causal, bpe_tokenizer, tmp_path):
    """A PromptModel whose backbone comes from a folder, so a LoRA artifact can refer to it."""
    tiny_causal.save_pretrained(tmp_path / "base")
    bpe_tokenizer.save_pretrained(tmp_path / "base")
    return PromptModel.from_pretrained(str(tmp_path / "base"), template=TEMPLATE, verbalizer=VERBALIZER)


# ------------------------------------------------------------------ registry
def test_builtins_are_registered():
    assert {"finetune", "zero_shot"} <= set(list_strategies())
    assert isinstance(get_strategy("finetune", config=FAST), Finetune)


def test_unknown_names_and_parameters_suggest_the_closest():
    with pytest.raises(StrategyError, match=r"unknown strategy 'fine_tune'\. Did you mean 'finetune'\?"):
        get_strategy("fine_tune")
    with pytest.raises(StrategyError, match=r"no parameter 'lora_r'\. Did you mean 'lora'\?"):
        get_strategy("finetune", lora_r=4)
    with pytest.raises(ConfigError, match=r"TrainConfig has an unknown key 'max_step'\. Did you mean 'max_steps'\?"):
        get_strategy("finetune", config={"max_step": 3})
    with pytest.raises(ConfigError, match=r"LoraSettings has an unknown key 'rank'"):
        get_strategy("finetune", lora={"rank": 4})


def test_register_a_new_strategy_without_editing_the_core(monkeypatch, causal):
    monkeypatch.setattr(registry, "_STRATEGIES", dict(registry._STRATEGIES))

    @register("identity")
    class Identity:
        def __init__(self, note: str = "") -> None:
            self.note = note

        def fit(self, model, train, unlabeled=None):
            return model

    assert "identity" in list_strategies() and get_strategy("identity", note="x").note == "x"
    assert get_strategy("identity").fit(causal, KEYWORD) is causal
    with pytest.raises(StrategyError, match="already taken"):
        register("finetune")(Identity)
    with pytest.raises(StrategyError, match="has no fit"):
        register("broken")(type("Broken", (), {}))


CONTRACT = ["self", "model", "train", "unlabeled", "dev", "targets", "resume_from"]


@pytest.mark.parametrize("name", list_strategies())
def test_every_strategy_has_the_one_fit_signature(name):
    fit = inspect.signature(type(get_strategy(name)).fit).parameters
    assert list(fit) == CONTRACT
    assert [fit[p].kind for p in CONTRACT[4:]] == [inspect.Parameter.KEYWORD_ONLY] * 3


@pytest.mark.parametrize("name", list_strategies())
def test_every_strategy_fits_and_returns_a_prompt_model(name, causal):
    """Contract: default parameters, labelled train + unlabeled + dev examples in, a working model out."""
    causal.template = CONTRACT_TEMPLATES.get(name, causal.template)
    strategy = get_strategy(name, **({} if name in UNTRAINED else {"config": {**FAST, "max_steps": 4}}))
    unlabeled = [{"text": e["text"]} for e in KEYWORD]
    fitted = strategy.fit(causal, KEYWORD, unlabeled, dev=KEYWORD[::4], targets=None, resume_from=None)
    assert isinstance(fitted, PromptModel)
    assert fitted.predict_proba(KEYWORD).shape == (16, 2) and not fitted.backbone.training


# PET/iPET need unlabelled data (fit refuses without it); tests/test_pet.py checks their targets and rate.
@pytest.mark.parametrize("name", sorted(set(list_strategies()) - UNTRAINED - {"pet", "ipet"}))
def test_every_trained_strategy_takes_soft_targets_and_its_own_learning_rate(name, causal):
    causal.template = CONTRACT_TEMPLATES.get(name, causal.template)
    strategy = get_strategy(name, config=TrainConfig(max_steps=2, progress=False))
    assert strategy.config.learning_rate == type(strategy).default_learning_rate  # a TrainConfig without a rate
    soft = np.full((len(KEYWORD), 2), 0.5)
    strategy.fit(causal, KEYWORD, targets=soft)
    assert strategy.result_.steps == 2


def test_zero_shot_accepts_an_empty_or_missing_training_set(causal):
    assert get_strategy("zero_shot").fit(causal, None) is causal
    assert get_strategy("zero_shot").fit(causal, []) is causal


# ------------------------------------------------------------------ zero_shot
def test_zero_shot_trains_nothing_and_fits_calibration(causal):
    before = trainable_state(causal)
    fitted = get_strategy("zero_shot", calibrate="batch").fit(causal, None, KEYWORD)
    assert fitted.calibrate == "batch" and fitted.calibration_ is not None
    after = trainable_state(fitted)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(PromptkitError, match="needs examples"):
        get_strategy("zero_shot", calibrate="batch").fit(causal, None)
    with pytest.raises(PromptkitError, match=r"invalid calibrate='cc'"):
        get_strategy("zero_shot", calibrate="cc")


# ------------------------------------------------------------------ finetune
def test_finetune_learns_the_keyword_task(causal):
    strategy = get_strategy("finetune", config=TrainConfig(**FAST))
    assert strategy.fit(causal, KEYWORD).score(KEYWORD) == 1.0
    assert strategy.result_.losses[-1] < strategy.result_.losses[0]


def test_finetune_can_keep_the_embeddings_fixed(causal):
    embeddings = causal.backbone.get_input_embeddings().weight.detach().clone()
    layer = next(p for n, p in causal.backbone.named_parameters() if "layers.0" in n).detach().clone()
    strategy = get_strategy("finetune", config=TrainConfig(**FAST), freeze_embeddings=True)
    model = strategy.fit(causal, KEYWORD)
    assert torch.equal(model.backbone.get_input_embeddings().weight, embeddings)
    assert not torch.equal(next(p for n, p in model.backbone.named_parameters() if "layers.0" in n), layer)
    assert model.score(KEYWORD) == 1.0


def test_lora_trains_only_adapters_and_saves_them_alone(saved_base, tmp_path):
    base = {k: v.clone() for k, v in saved_base.state_dict().items()}
    strategy = get_strategy("finetune", config={**FAST, "learning_rate": 3e-2}, lora={"r": 4, "alpha": 8})
    model = strategy.fit(saved_base, KEYWORD)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    for name, value in model.state_dict().items():
        if ".lora_" not in name:  # peft renames adapted layers' weights to ``...base_layer.weight``
            assert torch.equal(value, base[name.replace(".base_layer", "")]), name
    assert strategy.result_.losses[-1] < strategy.result_.losses[0]

    model.save_pretrained(str(tmp_path / "lora"))
    files = {p.relative_to(tmp_path / "lora").as_posix() for p in (tmp_path / "lora").rglob("*") if p.is_file()}
    assert files == {"promptkit.json", "template.yaml", "verbalizer.yaml", "adapter/adapter_model.safetensors",
                     "adapter/adapter_config.json"}  # fmt: skip
    assert (tmp_path / "lora/adapter/adapter_model.safetensors").stat().st_size < 20_000  # backbone: ~6 MB
    loaded = PromptModel.from_pretrained(str(tmp_path / "lora"))
    np.testing.assert_array_equal(loaded.predict_proba(KEYWORD), model.predict_proba(KEYWORD))


def test_lora_settings_are_validated():
    assert LoraSettings.parse(True) == LoraSettings() and LoraSettings.parse(False) is None
    assert LoraSettings(target_modules="q_proj").target_modules == ("q_proj",)
    with pytest.raises(ConfigError, match=r"LoraSettings.r=0 is invalid"):
        Finetune(lora={"r": 0})


def test_lora_without_peft_names_the_pip_command(causal, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # makes ``import peft`` raise ImportError
    with pytest.raises(BackboneError, match=r"pip install 'promptkit\[lora\]'"):
        get_strategy("finetune", config=FAST, lora=True).fit(causal, KEYWORD)


def test_lora_on_unknown_modules_is_a_clear_error(causal):
    with pytest.raises(BackboneError, match="cannot add LoRA adapters to LlamaForCausalLM"):
        get_strategy("finetune", config=FAST, lora={"target_modules": ["no_such_proj"]}).fit(causal, KEYWORD)
