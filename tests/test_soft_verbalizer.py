"""SoftVerbalizer: label vectors scored where the label word is predicted; training and saving."""

from __future__ import annotations

import copy

import numpy as np
import torch
from _train_worker import KEYWORD, VERBALIZER

from promptkit import PromptModel, SoftVerbalizer, Template, Verbalizer, get_strategy

EXAMPLES = [{"text": "a charming journey."}, {"text": "bleak, slow and desperate"}, {"text": "fine"}]


def test_starts_where_the_verbalizer_is_on_a_masked_lm(tiny_mlm, wordpiece_tokenizer):
    """WordPiece spells a word the same after a space or not, so the start is exact: same label ranking."""
    verbalizer = Verbalizer({0: ["terrible"], 1: ["great"], 2: ["fine"]})
    model = PromptModel(tiny_mlm, wordpiece_tokenizer, Template("{{ text }} It was {{ mask }}."), verbalizer)
    words = model.predict_proba(EXAMPLES)
    model.attach(SoftVerbalizer.from_model(model))
    np.testing.assert_allclose(model.predict_proba(EXAMPLES), words, atol=1e-5)


def test_scores_the_final_hidden_state_of_a_causal_lm(tiny_causal, bpe_tokenizer):
    model = PromptModel(tiny_causal, bpe_tokenizer, Template("{{ text }} It was {{ mask }}"), VERBALIZER)
    head = SoftVerbalizer(2, tiny_causal.config.hidden_size)
    torch.nn.init.normal_(head.weight)
    model.attach(head)
    expected = []
    for example in EXAMPLES:
        ids = bpe_tokenizer(f"{example['text']} It was", return_tensors="pt")
        with torch.no_grad():
            hidden = tiny_causal(**ids, output_hidden_states=True).hidden_states[-1][0, -1]  # final, normed
            expected.append(head(hidden[None]).softmax(-1)[0].numpy())
    np.testing.assert_allclose(model.predict_proba(EXAMPLES), np.stack(expected), atol=1e-5)


def test_soft_prompt_trains_and_saves_a_soft_verbalizer(tiny_causal, bpe_tokenizer, tmp_path):
    tiny_causal.save_pretrained(tmp_path / "base")
    bpe_tokenizer.save_pretrained(tmp_path / "base")
    template = Template("{{ soft(4) }} {{ text }}. It was {{ mask }}")
    model = PromptModel.from_pretrained(str(tmp_path / "base"), template=template, verbalizer=VERBALIZER)
    start = copy.deepcopy(SoftVerbalizer.from_model(model).state_dict())
    config = {"learning_rate": 0.1, "batch_size": 16, "max_steps": 5, "progress": False}
    fitted = get_strategy("soft_prompt", config=config, soft_verbalizer=True).fit(model, KEYWORD)
    trainable = {".".join(n.split(".")[:2]) for n, p in fitted.named_parameters() if p.requires_grad}
    assert trainable == {"addons.slot_embeddings", "addons.label_head"}
    assert not torch.equal(fitted.addons["label_head"].weight, start["weight"])  # it trained
    fitted.save_pretrained(str(tmp_path / "saved"), include_backbone=False)
    loaded = PromptModel.from_pretrained(str(tmp_path / "saved"))
    assert isinstance(loaded.addons["label_head"], SoftVerbalizer)
    np.testing.assert_array_equal(loaded.predict_proba(KEYWORD), fitted.predict_proba(KEYWORD))


def test_a_taken_addon_type_name_is_refused():
    import pytest

    from promptkit import PromptkitError
    from promptkit.addons import AddOn, register_addon

    class Other(AddOn):
        role = "label_head"

    with pytest.raises(PromptkitError, match="add-on type name 'soft_verbalizer' is already taken by SoftVerbalizer"):
        register_addon("soft_verbalizer")(Other)


def test_a_soft_verbalizer_for_another_label_count_is_refused(tiny_causal, bpe_tokenizer):
    import pytest

    from promptkit import ConfigError

    model = PromptModel(tiny_causal, bpe_tokenizer, Template("{{ text }} It was {{ mask }}"), VERBALIZER)
    with pytest.raises(ConfigError, match="3 label vectors but the verbalizer has 2 labels"):
        model.attach(SoftVerbalizer(3, tiny_causal.config.hidden_size))
