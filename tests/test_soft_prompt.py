"""soft_prompt: prompt tuning and P-tuning encoders with a frozen backbone; saving and errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _train_worker import KEYWORD, TEMPLATE, VERBALIZER
from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

from promptkit import PromptkitError, PromptModel, Template, TemplateError, get_strategy, list_strategies
from promptkit.prompt_encoders import LstmPromptEncoder, MlpPromptEncoder, PromptTuning
from promptkit.strategies import SoftPrompt, StrategyError

SOFT = Template("{{ soft(4) }} {{ text }}. It was {{ mask }}")
FAST = {"learning_rate": 0.1, "batch_size": 16, "max_steps": 25, "lr_schedule": "constant", "progress": False}
SMALL = {**FAST, "max_steps": 3}


@pytest.fixture(scope="module")
def sensitive_backbones(bpe_tokenizer, wordpiece_tokenizer):
    """Tiny random models whose outputs depend on context.

    With the default init (std 0.02) a random 2-layer model attends almost uniformly and its
    pre-norm layers wash out any input vector, so no prompt can move its output; std 0.3
    gives a frozen random model that soft prompts can steer.
    """
    torch.manual_seed(0)
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    causal = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(bpe_tokenizer),
            num_key_value_heads=2,
            tie_word_embeddings=True,
            max_position_embeddings=256,
            initializer_range=0.3,
            **shape,
        )  # fmt: skip
    )
    mlm = BertForMaskedLM(
        BertConfig(
            vocab_size=len(wordpiece_tokenizer),
            max_position_embeddings=256,
            initializer_range=0.3,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **shape,
        )  # fmt: skip
    )
    return {"causal": (causal.eval(), bpe_tokenizer), "mlm": (mlm.eval(), wordpiece_tokenizer)}


@pytest.fixture
def causal(tiny_causal, bpe_tokenizer):
    return PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, SOFT, VERBALIZER)


@pytest.fixture
def saved_base(tiny_causal, bpe_tokenizer, tmp_path):
    """A PromptModel whose backbone comes from a folder, so a saved soft prompt can refer to it."""
    tiny_causal.save_pretrained(tmp_path / "base")
    bpe_tokenizer.save_pretrained(tmp_path / "base")
    return PromptModel.from_pretrained(str(tmp_path / "base"), template=SOFT, verbalizer=VERBALIZER)


# ------------------------------------------------------------------ learning with a frozen backbone
@pytest.mark.parametrize(("head", "encoder"), [("causal", "none"), ("causal", "lstm"), ("mlm", "none"), ("mlm", "mlp")])
def test_soft_prompt_learns_the_keyword_task_with_a_frozen_backbone(head, encoder, sensitive_backbones):
    backbone, tokenizer = sensitive_backbones[head]
    model = PromptModel(copy.deepcopy(backbone), tokenizer, SOFT, VERBALIZER)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    strategy = get_strategy("soft_prompt", encoder=encoder, config=FAST)
    fitted = strategy.fit(model, KEYWORD)

    losses = strategy.result_.losses
    assert losses[-1] < 0.2 * losses[0]
    assert fitted.score(KEYWORD) == 1.0
    trainable = [n for n, p in fitted.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("addons.slot_embeddings.") for n in trainable)
    assert all(torch.equal(v, before[k]) for k, v in fitted.backbone.state_dict().items())


def test_default_config_uses_a_soft_prompt_learning_rate():
    assert SoftPrompt().config.learning_rate == 3e-2
    assert SoftPrompt(config={"max_steps": 5}).config.learning_rate == 3e-2
    assert SoftPrompt(config={"learning_rate": 0.3}).config.learning_rate == 0.3


# ------------------------------------------------------------------ initialisation and determinism
@pytest.mark.parametrize("encoder", ["none", "lstm", "mlp"])
def test_same_seed_same_vectors(encoder, causal):
    first = SoftPrompt(encoder=encoder, seed=3).build(causal, 5)
    again = SoftPrompt(encoder=encoder, seed=3).build(causal, 5)
    other = SoftPrompt(encoder=encoder, seed=4).build(causal, 5)
    assert first().shape == (5, 32)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(first.prompt, other.prompt)


def test_same_seed_same_trained_vectors(tiny_causal, bpe_tokenizer):
    runs = []
    for _ in range(2):
        model = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, SOFT, VERBALIZER)
        runs.append(get_strategy("soft_prompt", config=SMALL).fit(model, KEYWORD).addons["slot_embeddings"].prompt)
    assert torch.equal(runs[0], runs[1])


def test_initialisations(causal):
    embeddings = causal.backbone.get_input_embeddings().weight
    ids = causal.tokenizer("Review", add_special_tokens=False)["input_ids"]
    from_words = SoftPrompt(init_words="Review").build(causal, 5).prompt
    torch.testing.assert_close(from_words, embeddings[(ids * 5)[:5]], rtol=0, atol=0)
    drawn = SoftPrompt().build(causal, 8).prompt  # rows of random vocabulary tokens
    assert all((embeddings == row).all(-1).any() for row in drawn)
    noise = SoftPrompt(init="random").build(causal, 200).prompt
    assert abs(noise.std().item() - embeddings.std().item()) < 0.2 * embeddings.std().item()
    residual = SoftPrompt(encoder="mlp").build(causal, 3)  # starts exactly at its (vocabulary) inputs
    assert isinstance(residual, MlpPromptEncoder) and torch.equal(residual(), residual.prompt)


# ------------------------------------------------------------------ saving
@pytest.mark.parametrize("encoder", ["none", "lstm"])
def test_save_references_the_backbone_and_loads_identical_predictions(encoder, saved_base, tmp_path):
    model = get_strategy("soft_prompt", encoder=encoder, config=SMALL).fit(saved_base, KEYWORD)
    model.save_pretrained(str(tmp_path / "soft"), include_backbone=False)
    files = {p.relative_to(tmp_path / "soft").as_posix() for p in (tmp_path / "soft").rglob("*") if p.is_file()}
    assert files == {"promptkit.json", "template.yaml", "verbalizer.yaml", "addons/slot_embeddings/config.json",
                     "addons/slot_embeddings/model.safetensors"}  # fmt: skip
    loaded = PromptModel.from_pretrained(str(tmp_path / "soft"))
    kind = {"none": PromptTuning, "lstm": LstmPromptEncoder}[encoder]
    assert type(loaded.addons["slot_embeddings"]) is kind and loaded.addons["slot_embeddings"].config() == {
        "n_tokens": 4,
        "hidden_size": 32,
    }
    np.testing.assert_array_equal(loaded.predict_proba(KEYWORD), model.predict_proba(KEYWORD))


def test_unregistered_addon_cannot_be_saved(causal, tmp_path):
    class Unregistered(PromptTuning):
        pass

    causal.attach(Unregistered(2, 32))
    with pytest.raises(PromptkitError, match=r"add-on 'slot_embeddings' of type Unregistered: it is not registered"):
        causal.save_pretrained(str(tmp_path / "x"))
    with pytest.raises(PromptkitError, match="attach\\(\\) takes a promptkit.addons.AddOn, got Linear"):
        causal.attach(torch.nn.Linear(1, 1))


# ------------------------------------------------------------------ errors
def test_registered_and_parameters_validated():
    assert "soft_prompt" in list_strategies()
    with pytest.raises(StrategyError, match=r"invalid soft_prompt encoder='gru'; valid are \['none', 'lstm', 'mlp'\]"):
        get_strategy("soft_prompt", encoder="gru")
    with pytest.raises(StrategyError, match=r"invalid soft_prompt init='zeros'; valid are \['vocab', 'random'\]"):
        get_strategy("soft_prompt", init="zeros")
    with pytest.raises(StrategyError, match=r"init_words='hi' needs init='vocab'"):
        get_strategy("soft_prompt", init="random", init_words="hi")
    with pytest.raises(StrategyError, match=r"no parameter 'encoders'\. Did you mean 'encoder'\?"):
        get_strategy("soft_prompt", encoders="lstm")


def test_template_needs_soft_slots(tiny_causal, bpe_tokenizer):
    plain = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)
    with pytest.raises(
        TemplateError, match=r"has no \{\{ soft\(n\) \}\} slots.*e\.g\. '\{\{ soft\(20\) \}\} \{\{ text"
    ):
        get_strategy("soft_prompt", config=SMALL).fit(plain, KEYWORD)
    assert all(p.requires_grad for p in plain.backbone.parameters())  # nothing was frozen
    plain.template = Template("{{ trigger(2) }} {{ text }}. It was {{ mask }}")
    with pytest.raises(TemplateError, match=r"has \['trigger'\] slots only"):
        get_strategy("soft_prompt", config=SMALL).fit(plain, KEYWORD)
    with pytest.raises(PromptkitError, match="needs at least one training example"):
        get_strategy("soft_prompt").fit(plain, [])
