"""prefix_tuning: per-layer key/value prefixes (P-tuning v2) with a frozen causal LM."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _train_worker import KEYWORD, TEMPLATE, VERBALIZER
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from promptkit import BackboneError, PromptModel, get_strategy
from promptkit.prefix import PrefixTuning, prefix_shape
from promptkit.strategies import PrefixTuningStrategy, StrategyError

FAST = {"learning_rate": 0.05, "batch_size": 16, "max_steps": 30, "lr_schedule": "constant", "progress": False}
SMALL = {**FAST, "max_steps": 3}
ROWS = [{"text": "a long and winding tale of two cities"}, {"text": "short"}, {"text": "the cat sat"}]


@pytest.fixture(scope="module")
def sensitive_causal(bpe_tokenizer):
    """A tiny random Llama whose outputs depend on context (std 0.3; see test_soft_prompt)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(bpe_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         max_position_embeddings=256, initializer_range=0.3)  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_gpt2(bpe_tokenizer):
    """Absolute position embeddings and a fused qkv projection: another cache layout than Llama's."""
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(bpe_tokenizer), n_embd=32, n_layer=2, n_head=4,
                                      n_positions=256)).eval()  # fmt: skip


def _with_prefix_of(model: PromptModel, ids: list[int]) -> PromptModel:
    prefix = PrefixTuning(len(ids), **prefix_shape(model.backbone))
    prefix.init_from_tokens(model.backbone, ids)
    model.attach(prefix)
    return model


# ------------------------------------------------------------------ parity
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_prefix_of_real_activations_equals_prepending_those_tokens(arch, tiny_causal, tiny_gpt2, bpe_tokenizer):
    """A prefix holding the backbone's own keys/values for tokens X scores as if X were written before the prompt."""
    backbone = {"llama": tiny_causal, "gpt2": tiny_gpt2}[arch]
    ids = bpe_tokenizer("Classify this review:", add_special_tokens=False)["input_ids"]
    model = _with_prefix_of(PromptModel(copy.deepcopy(backbone), bpe_tokenizer, TEMPLATE, VERBALIZER), ids)
    with torch.no_grad():
        got = model(model.encode(ROWS))  # [3, 2] label log-scores; rows of different lengths (right padding)

    words = [model.table.ids(True)[w][0] for w in range(2)]  # " bad", " good": one token each
    expected = []
    for row in ROWS:
        prompt = bpe_tokenizer(TEMPLATE.render(row).to_text(mask_text="").rstrip())["input_ids"]  # "... It was"
        with torch.no_grad():
            logits = backbone(input_ids=torch.tensor([ids + prompt])).logits[0, -1]  # next token after the prompt
        expected.append(logits.log_softmax(-1)[words])
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=1e-5)


def test_shape_follows_the_backbone_config(tiny_causal, tiny_gpt2):
    assert prefix_shape(tiny_causal) == {"n_layers": 2, "n_kv_heads": 2, "head_dim": 8}  # grouped-query heads
    assert prefix_shape(tiny_gpt2) == {"n_layers": 2, "n_kv_heads": 4, "head_dim": 8}


# ------------------------------------------------------------------ learning with a frozen backbone
def test_prefix_tuning_learns_the_keyword_task_with_a_frozen_backbone(sensitive_causal, bpe_tokenizer):
    model = PromptModel(copy.deepcopy(sensitive_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    start = model.score(KEYWORD)
    strategy = get_strategy("prefix_tuning", n_tokens=4, config=FAST)
    fitted = strategy.fit(model, KEYWORD)

    losses = strategy.result_.losses
    assert losses[-1] < 0.2 * losses[0]
    assert start < 1.0 and fitted.score(KEYWORD) == 1.0
    trainable = {n for n, p in fitted.named_parameters() if p.requires_grad}
    assert trainable == {"addons.prefix.keys", "addons.prefix.values"}
    assert all(torch.equal(v, before[k]) for k, v in fitted.backbone.state_dict().items())


def test_same_seed_same_prefix_and_training(tiny_causal, bpe_tokenizer):
    def fitted(seed: int) -> PrefixTuning:
        model = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)
        return get_strategy("prefix_tuning", n_tokens=3, seed=seed, config=SMALL).fit(model, KEYWORD).addons["prefix"]

    first, again, other = fitted(1), fitted(1), fitted(2)
    assert torch.equal(first.keys, again.keys) and torch.equal(first.values, again.values)
    assert not torch.equal(first.keys, other.keys)


def test_initialisations(tiny_causal, bpe_tokenizer):
    model = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)
    ids = bpe_tokenizer("Review", add_special_tokens=False)["input_ids"]
    from_words = PrefixTuningStrategy(n_tokens=4, init_words="Review").build(model)
    by_hand = PrefixTuning(4, **prefix_shape(model.backbone))
    by_hand.init_from_tokens(model.backbone, (ids * 4)[:4])
    assert torch.equal(from_words.keys, by_hand.keys) and torch.equal(from_words.values, by_hand.values)
    noise = PrefixTuningStrategy(n_tokens=50, init="random").build(model)
    assert abs(noise.keys.std().item() - 0.02) < 0.005


# ------------------------------------------------------------------ saving
def test_saved_prefix_refers_to_the_backbone_and_loads_identical_predictions(tiny_causal, bpe_tokenizer, tmp_path):
    tiny_causal.save_pretrained(tmp_path / "base")
    bpe_tokenizer.save_pretrained(tmp_path / "base")
    base = PromptModel.from_pretrained(str(tmp_path / "base"), template=TEMPLATE, verbalizer=VERBALIZER)
    model = get_strategy("prefix_tuning", n_tokens=3, config=SMALL).fit(base, KEYWORD)
    model.save_pretrained(str(tmp_path / "prefix"), include_backbone=False)
    files = {p.relative_to(tmp_path / "prefix").as_posix() for p in (tmp_path / "prefix").rglob("*") if p.is_file()}
    assert files == {"promptkit.json", "template.yaml", "verbalizer.yaml", "addons/prefix/config.json",
                     "addons/prefix/model.safetensors"}  # fmt: skip
    loaded = PromptModel.from_pretrained(str(tmp_path / "prefix"))
    assert type(loaded.addons["prefix"]) is PrefixTuning and loaded.addons["prefix"].n_tokens == 3
    np.testing.assert_array_equal(loaded.predict_proba(KEYWORD), model.predict_proba(KEYWORD))


# ------------------------------------------------------------------ errors
def test_parameters_are_validated():
    with pytest.raises(StrategyError, match=r"invalid prefix_tuning n_tokens=0; expected an int >= 1"):
        get_strategy("prefix_tuning", n_tokens=0)
    with pytest.raises(StrategyError, match=r"invalid prefix_tuning init='zeros'; valid are \['vocab', 'random'\]"):
        get_strategy("prefix_tuning", init="zeros")
    with pytest.raises(StrategyError, match=r"init_words='hi' needs init='vocab'"):
        get_strategy("prefix_tuning", init="random", init_words="hi")
    assert PrefixTuningStrategy().config.learning_rate == 1e-2


def test_masked_lms_are_refused_with_the_alternative(tiny_mlm, wordpiece_tokenizer):
    model = PromptModel(copy.deepcopy(tiny_mlm), wordpiece_tokenizer, TEMPLATE, VERBALIZER)
    with pytest.raises(BackboneError, match=r"prefix tuning needs a causal LM.*get_strategy\('soft_prompt'\)"):
        get_strategy("prefix_tuning", config=SMALL).fit(model, KEYWORD)
    assert "prefix" not in model.addons and all(p.requires_grad for p in model.backbone.parameters())
