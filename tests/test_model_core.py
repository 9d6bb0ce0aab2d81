"""PromptModel's foundations: add-ons by role, with_prompt/clone, input embeddings, derived state, options."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
import torch
from _train_worker import KEYWORD, TEMPLATE, VERBALIZER

from promptkit import ConfigError, DataError, PromptModel, SavedModelError, Template, Verbalizer
from promptkit.addons import AddOn, register_addon

EXAMPLES = [{"text": "a charming journey."}, {"text": "bleak, slow and desperate"}]


@register_addon("test_label_bias")
class LabelBias(AddOn):
    """A test-only add-on kind, registered here: nothing in model.py or persistence.py names it."""

    role = "label_bias"

    def __init__(self, n_labels: int) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(n_labels))

    def config(self) -> dict[str, Any]:
        return {"n_labels": len(self.bias)}

    def label_scores(self, model, batch, scores, features):
        return scores + self.bias


@pytest.fixture
def causal(tiny_causal, bpe_tokenizer):
    return PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)


# ------------------------------------------------------------------ add-ons
def test_a_new_addon_kind_changes_scores_and_saves_and_loads(tiny_causal, bpe_tokenizer, tmp_path):
    tiny_causal.save_pretrained(tmp_path / "base")
    bpe_tokenizer.save_pretrained(tmp_path / "base")
    model = PromptModel.from_pretrained(str(tmp_path / "base"), template=TEMPLATE, verbalizer=VERBALIZER)
    plain = model.label_log_probs(EXAMPLES)
    bias = model.attach(LabelBias(2))
    with torch.no_grad():
        bias.bias.copy_(torch.tensor([0.0, 3.0]))
    shifted = model.label_log_probs(EXAMPLES)
    torch.testing.assert_close(shifted, (plain + torch.tensor([0.0, 3.0])).log_softmax(-1))
    model.save_pretrained(str(tmp_path / "saved"), include_backbone=False)
    manifest = json.loads((tmp_path / "saved" / "promptkit.json").read_text())
    assert manifest["addons"] == {"label_bias": "addons/label_bias"}
    loaded = PromptModel.from_pretrained(str(tmp_path / "saved"))
    assert isinstance(loaded.addons["label_bias"], LabelBias)
    torch.testing.assert_close(loaded.addons["label_bias"].bias, bias.bias)
    torch.testing.assert_close(loaded.label_log_probs(EXAMPLES), shifted)


def test_attaching_the_same_role_replaces_and_detach_removes(causal):
    first, second = causal.attach(LabelBias(2)), causal.attach(LabelBias(2))
    assert causal.addons["label_bias"] is second and first is not second
    assert causal.detach("label_bias") is second and "label_bias" not in causal.addons
    assert causal.detach("label_bias") is None


def test_damaged_addon_weights_are_refused_with_the_file(causal, tmp_path):
    causal.name_or_path = "unused"
    causal.attach(LabelBias(2))
    causal.save_pretrained(str(tmp_path / "m"))
    from safetensors.torch import save_file

    save_file({"bias": torch.zeros(3)}, str(tmp_path / "m/addons/label_bias/model.safetensors"))
    with pytest.raises(SavedModelError, match=r"label_bias/model.safetensors does not match its config.*wrong shape"):
        PromptModel.from_pretrained(str(tmp_path / "m"))


# ------------------------------------------------------------------ with_prompt / clone
def test_with_prompt_shares_the_backbone_and_rebuilds_the_label_words(causal):
    other = Verbalizer({0: ["terrible", "awful"], 1: ["great"]})
    swapped = causal.with_prompt(verbalizer=other)
    assert swapped.backbone is causal.backbone and swapped.template == causal.template
    assert swapped.table.words == ("terrible", "awful", "great") and causal.table.words == ("bad", "good")
    reference = PromptModel(causal.backbone, causal.tokenizer, TEMPLATE, other)
    np.testing.assert_array_equal(swapped.predict_proba(EXAMPLES), reference.predict_proba(EXAMPLES))
    templated = causal.with_prompt(template=Template("Review: {{ text }} Verdict: {{ mask }}"))
    assert templated.verbalizer == causal.verbalizer and templated.backbone is causal.backbone
    with torch.no_grad():  # shared weights: a change shows through every prompt
        causal.backbone.get_input_embeddings().weight.mul_(2)
    again = PromptModel(causal.backbone, causal.tokenizer, TEMPLATE, other)
    np.testing.assert_array_equal(swapped.predict_proba(EXAMPLES), again.predict_proba(EXAMPLES))


def test_clone_is_independent(causal):
    causal.attach(LabelBias(2))
    twin = causal.clone()
    before = causal.predict_proba(EXAMPLES)
    np.testing.assert_array_equal(twin.predict_proba(EXAMPLES), before)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.5)
    np.testing.assert_array_equal(causal.predict_proba(EXAMPLES), before)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(causal.parameters(), twin.parameters()))


# ------------------------------------------------------------------ input embeddings
def test_gradient_at_trigger_slots_equals_a_hand_computation(tiny_causal, bpe_tokenizer):
    """``input_embeddings`` + ``forward(inputs_embeds=)`` give AutoPrompt its gradient at the trigger slots."""
    template = Template("{{ text }} {{ trigger(2) }} It was {{ mask }}")
    model = PromptModel(tiny_causal, bpe_tokenizer, template, VERBALIZER)
    triggers = bpe_tokenizer(" movie review", add_special_tokens=False)["input_ids"]
    assert len(triggers) == 2

    class Triggers(AddOn):
        role = "slot_embeddings"

        def slot_vectors(self, model):
            return model.backbone.get_input_embeddings().weight[triggers]

    model.attach(Triggers())
    batch = model.encode(EXAMPLES[:1])
    embeds = model.input_embeddings(batch).detach().requires_grad_()
    model(batch, inputs_embeds=embeds)[0, 1].backward()  # score of label 1 ("good")
    ours = embeds.grad[0, batch.slot_positions[0]]  # [2, H]

    # By hand: the same text with the trigger words written in, the gradient of log p(" good") at their embeddings.
    ids = batch.input_ids[0].clone()
    ids[batch.slot_positions[0]] = torch.tensor(triggers)
    hand = tiny_causal.get_input_embeddings()(ids[None]).detach().requires_grad_()
    logits = tiny_causal(inputs_embeds=hand, attention_mask=batch.attention_mask[:1]).logits  # [1, T, V]
    last = int(batch.attention_mask[0].sum()) - 1
    good = bpe_tokenizer(" good", add_special_tokens=False)["input_ids"][0]
    logits[0, last].log_softmax(-1)[good].backward()
    # float32 noise only: gradients up to ~0.3 here, the two paths differ by a few 1e-6
    torch.testing.assert_close(ours, hand.grad[0, batch.slot_positions[0]], atol=1e-5, rtol=1e-4)


def test_slots_without_an_addon_are_a_clear_error(tiny_causal, bpe_tokenizer):
    model = PromptModel(tiny_causal, bpe_tokenizer, Template("{{ trigger(2) }} {{ text }} {{ mask }}"), VERBALIZER)
    with pytest.raises(ConfigError, match="has soft/trigger slots but no add-on fills them"):
        model.input_embeddings(model.encode(EXAMPLES))


# ------------------------------------------------------------------ derived state
def test_assigning_verbalizer_or_max_length_rebuilds_derived_state(causal):
    causal.calibrate = "content_free"
    causal.fit_calibration()
    other = Verbalizer({0: ["awful"], 1: ["fine"], 2: ["great"]})
    causal.verbalizer = other
    assert causal.table.words == ("awful", "fine", "great") and causal.word_label.tolist() == [0, 1, 2]
    assert causal.calibration_ is None and causal.predict_proba(EXAMPLES).shape == (2, 3)
    fresh = PromptModel(causal.backbone, causal.tokenizer, TEMPLATE, other, calibrate="content_free")
    np.testing.assert_array_equal(causal.predict_proba(EXAMPLES), fresh.predict_proba(EXAMPLES))
    causal.max_length = 16
    assert causal.encoder.max_length == 16 and causal.encode(KEYWORD[:1]).input_ids.shape[1] <= 16
    with pytest.raises(ConfigError, match=r"max_length='64' is invalid: expected an int >= 8"):
        causal.max_length = "64"
    assert causal.max_length == 16  # a refused value leaves the model as it was
    with pytest.raises(ConfigError, match="head is fixed"):
        causal.head = "mlm"


# ------------------------------------------------------------------ options
def test_default_max_length_respects_the_position_limit(tiny_causal, bpe_tokenizer):
    assert PromptModel(tiny_causal, bpe_tokenizer, TEMPLATE, VERBALIZER).max_length == 256


def test_from_pretrained_typos_are_clear(tiny_causal, bpe_tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no option 'calibrat'\. Did you mean 'calibrate'\?"):
        PromptModel.from_pretrained("typo-dir", template=TEMPLATE, verbalizer=VERBALIZER, calibrat="batch")
    with pytest.raises(SavedModelError, match=r"no saved model at 'typo-dir': no such folder"):
        PromptModel.from_pretrained("typo-dir")


def test_score_and_calibration_refuse_empty_input(causal):
    with pytest.raises(DataError, match="score\\(\\) needs at least one labelled example"):
        causal.score([])
    causal.calibrate = "batch"
    with pytest.raises(DataError, match="needs unlabeled examples"):
        causal.fit_calibration([])
