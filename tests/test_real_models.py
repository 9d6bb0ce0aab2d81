"""PromptModel on real pretrained weights (offline backbones) and real SST-2 data."""

import numpy as np
import pytest
import torch

from promptkit import PromptModel, load_task
from promptkit.catalog import load_template, load_verbalizer, paired_verbalizer

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def smollm2():
    return PromptModel.from_pretrained(
        "smollm2-135m",
        template=load_template("sst2/review_sentiment"),
        verbalizer=load_verbalizer("sst2/positive_negative"),
    )


@pytest.fixture(scope="module")
def sst2_dev():
    return load_task("sst2", "dev")


def _hand_proba(backbone, tokenizer, texts, words):
    """Label probabilities with plain transformers: full logits at the last prompt token."""
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in words]
    assert all(len(i) == 1 for i in ids)
    rows = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            lp = backbone(**enc).logits[0, -1].log_softmax(-1)
        rows.append(torch.stack([lp[i[0]] for i in ids]).softmax(-1).numpy())
    return np.stack(rows)


def test_smollm2_parity_with_plain_transformers(smollm2, sst2_dev):
    examples = sst2_dev[:6]
    texts = [f"Review: {e['text']}\nSentiment:" for e in examples]
    expected = _hand_proba(smollm2.backbone, smollm2.tokenizer, texts, ["negative", "positive"])
    np.testing.assert_allclose(smollm2.predict_proba(examples), expected, atol=1e-5)


def test_smollm2_chat_parity(smollm2, sst2_dev):
    name = "sst2/chat_sentiment"
    model = PromptModel(
        smollm2.backbone, smollm2.tokenizer, load_template(name), load_verbalizer(paired_verbalizer(name))
    )
    example = sst2_dev[0]
    user = model.template.render(example).to_text("").rstrip()
    text = smollm2.tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    ids = smollm2.tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        lp = smollm2.backbone(**ids).logits[0, -1].log_softmax(-1)
    table = model.table.ids(False)
    scores = torch.stack(
        [lp[[w[0] for w, lab in zip(table, model.table.word_label) if lab == c]].logsumexp(0) for c in range(2)]
    )
    assert all(len(w) == 1 for w in table)
    np.testing.assert_allclose(model.predict_proba([example])[0], scores.softmax(-1).numpy(), atol=1e-5)


def test_smollm2_zero_shot_beats_chance_on_sst2(smollm2, sst2_dev):
    """A 128-example slice; the full-dev figure comes from benchmarks/zero_shot.py."""
    model = PromptModel(
        smollm2.backbone, smollm2.tokenizer, smollm2.template, smollm2.verbalizer, calibrate="content_free"
    )
    assert model.score(sst2_dev[:128]) >= 0.72


def test_splade_tiny_scores_real_prompts(sst2_dev):
    model = PromptModel.from_pretrained(
        "splade-tiny", template=load_template("sst2/it_was"), verbalizer=load_verbalizer("sst2/great_terrible")
    )
    proba = model.predict_proba(sst2_dev[:16])
    assert proba.shape == (16, 2) and np.allclose(proba.sum(-1), 1, atol=1e-6)
    assert proba.std(0).max() > 1e-4  # the MLM reacts to the input text
