"""In-context demonstrations: which examples, how they render, bad input, and a real-model check."""

import numpy as np
import pytest
import torch

from promptkit import PromptkitError, PromptModel, Template, TemplateError, Verbalizer, load_task
from promptkit.catalog import load_template, load_verbalizer
from promptkit.demonstrations import pick_demonstrations, with_demonstrations

TEMPLATE = Template("Review: {{ text }}\nSentiment: {{ mask }}", name="review")
VERBALIZER = Verbalizer({0: ["negative", "bad"], 1: ["positive"]})
ROWS = [{"text": f"neg {i} .", "label": 0} for i in range(6)] + [{"text": f"pos {i} .", "label": 1} for i in range(6)]


def test_picks_per_class_deterministically():
    picked = pick_demonstrations(ROWS, VERBALIZER, per_class=2, seed=3)
    assert sorted(row["label"] for _, row in picked) == [0, 0, 1, 1]
    assert all(VERBALIZER.index(row["label"]) == i for i, row in picked)
    assert picked == pick_demonstrations(ROWS, VERBALIZER, per_class=2, seed=3)
    draws = {tuple(r["text"] for _, r in pick_demonstrations(ROWS, VERBALIZER, per_class=2, seed=s)) for s in range(8)}
    assert len(draws) > 1  # the seed decides which rows and their order


def test_renders_demonstrations_with_the_first_label_word_before_the_prompt():
    template = with_demonstrations(TEMPLATE, VERBALIZER, ROWS, per_class=1, seed=0)
    text = template.render({"text": "fine ."}).to_text()
    blocks = text.split("\n\n")
    assert len(blocks) == 3 and blocks[-1] == "Review: fine .\nSentiment: [MASK]"
    shown = sorted(blocks[:2])
    assert shown[0].startswith("Review: neg ") and shown[0].endswith("\nSentiment: negative")
    assert shown[1].startswith("Review: pos ") and shown[1].endswith("\nSentiment: positive")
    assert template.name == "review+demos1" and template.variables == {"text"}


def test_demonstration_text_is_literal_not_jinja():
    rows = [{"text": "{{ mask }} {% if 1 %}x{% endif %} {{ ''.__class__ }}", "label": 0}, {"text": "ok", "label": 1}]
    template = with_demonstrations(TEMPLATE, VERBALIZER, rows, seed=0)
    text = template.render({"text": "new"}).to_text()
    assert "{{ mask }} {% if 1 %}x{% endif %} {{ ''.__class__ }}" in text
    assert text.count("[MASK]") == 1


def test_chat_flag_is_kept():
    chat = Template("Classify: {{ text }}\n{{ mask }}", name="chat", chat=True)
    assert with_demonstrations(chat, VERBALIZER, ROWS, seed=0).chat


@pytest.mark.parametrize("per_class", [0, -1, 1.5, True])
def test_per_class_must_be_a_positive_int(per_class):
    with pytest.raises(PromptkitError, match="per_class"):
        with_demonstrations(TEMPLATE, VERBALIZER, ROWS, per_class=per_class)


def test_label_outside_the_verbalizer_names_the_row():
    rows = [*ROWS[:2], {"text": "huh", "label": 7}]
    with pytest.raises(PromptkitError, match="row 2") as err:
        with_demonstrations(TEMPLATE, VERBALIZER, rows)
    assert "7" in str(err.value)


def test_missing_label_field_names_the_row():
    with pytest.raises(PromptkitError, match="row 1 has no 'label'"):
        with_demonstrations(TEMPLATE, VERBALIZER, [ROWS[0], {"text": "no label"}])


def test_too_few_examples_of_a_label_says_which():
    with pytest.raises(PromptkitError, match=r"\{1: 0\}"):
        with_demonstrations(TEMPLATE, VERBALIZER, ROWS[:6], per_class=1)


def test_slots_must_come_after_demonstrations():
    soft = Template("{{ soft(4) }} {{ text }} It was {{ mask }}.", name="soft")
    with pytest.raises(TemplateError, match="slots"):
        with_demonstrations(soft, VERBALIZER, ROWS)


@pytest.mark.real_model
def test_smollm2_scores_the_demonstrations_as_plain_text():
    """The real model sees exactly the demonstrations' text before the prompt: parity with plain transformers."""
    name = "sst2/review_sentiment"
    template, verbalizer = load_template(name), load_verbalizer("sst2/positive_negative")
    demo = with_demonstrations(template, verbalizer, load_task("sst2", "train")[:50], per_class=1, seed=13)
    model = PromptModel.from_pretrained("smollm2-135m", template=demo, verbalizer=verbalizer)
    dev = load_task("sst2", "dev")[:4]
    ids = [model.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("negative", "positive")]
    expected = []
    for row in dev:
        text = demo.render(row).to_text(mask_text="").rstrip(" ")
        assert text.count("Sentiment:") == 3 and text.endswith(row["text"] + "\nSentiment:")
        with torch.no_grad():
            logits = model.backbone(**model.tokenizer(text, return_tensors="pt")).logits[0, -1]
        expected.append(logits.log_softmax(-1)[ids].softmax(-1).numpy())
    np.testing.assert_allclose(model.predict_proba(dev), np.stack(expected), atol=1e-5)


def test_draws_by_verbalizer_class_index():
    """Rows are grouped by class index, so each class gets exactly per_class demonstrations."""
    verbalizer = Verbalizer({"yes": ["Yes"], "no": ["No"]})
    rows = [{"text": t, "label": lab} for t, lab in [("a", "no"), ("b", "yes"), ("c", "yes"), ("d", "no")]]
    picked = pick_demonstrations(rows, verbalizer, per_class=2, seed=0)
    assert sorted(i for i, _ in picked) == [0, 0, 1, 1]
    assert all(verbalizer.index(row["label"]) == i for i, row in picked)
