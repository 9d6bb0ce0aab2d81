"""PromptModel on tiny random-init models with real tokenizers: shapes, parity, batching, I/O."""

import numpy as np
import pytest
import torch

from promptkit import DataError, PromptkitError, PromptModel, Template, Verbalizer, VerbalizerError

EXAMPLES = [
    {"text": "a charming and often affecting journey.", "label": 1},
    {"text": "unflinchingly bleak and desperate", "label": 0},
    {"text": "the acting, costumes, music, cinematography and sound are all astounding given the budget.", "label": 1},
    {"text": "it's slow -- very, very slow.", "label": 0},
]
SENTIMENT = Verbalizer({0: ["terrible", "bad"], 1: ["great", "good"]})


def _model(backbone, tokenizer, text="{{ text }} All in all, it was {{ mask }}", **options):
    return PromptModel(backbone, tokenizer, Template(text), options.pop("verbalizer", SENTIMENT), **options)


def _causal_by_hand(backbone, tokenizer, prefix, words):
    """Log-prob of each word after ``prefix`` with plain transformers (full logits, teacher forcing)."""
    out = []
    for word in words:
        p = tokenizer(prefix)["input_ids"]
        w = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = backbone(input_ids=torch.tensor([p + w])).logits[0]  # [T, V]
        lp = logits.log_softmax(-1)
        out.append(sum(lp[len(p) - 1 + k, t].item() for k, t in enumerate(w)))
    return out


def _to_proba(word_scores, word_label, n_labels):
    scores = torch.tensor(word_scores)
    labels = torch.stack(
        [scores[[i for i, lab in enumerate(word_label) if lab == c]].logsumexp(0) for c in range(n_labels)]
    )
    return labels.softmax(-1).numpy()


def test_causal_parity_with_hand_computation(tiny_causal, bpe_tokenizer):
    words = ["terrible", "unwatchable", "great", "masterful"]  # mixes single- and multi-token words
    verbalizer = Verbalizer({0: words[:2], 1: words[2:]})
    assert any(len(bpe_tokenizer(" " + w, add_special_tokens=False)["input_ids"]) > 1 for w in words)
    model = _model(tiny_causal, bpe_tokenizer, verbalizer=verbalizer)
    proba = model.predict_proba(EXAMPLES)
    for example, row in zip(EXAMPLES, proba):
        prefix = f"{example['text']} All in all, it was"
        expected = _to_proba(_causal_by_hand(tiny_causal, bpe_tokenizer, prefix, words), [0, 0, 1, 1], 2)
        np.testing.assert_allclose(row, expected, atol=1e-5)


def test_causal_fill_in_parity(tiny_causal, bpe_tokenizer):
    """A mask with text after it is scored by the likelihood of word + rest of the prompt."""
    model = _model(tiny_causal, bpe_tokenizer, text="{{ text }} It was {{ mask }} overall.")
    proba = model.predict_proba(EXAMPLES[:2])
    for example, row in zip(EXAMPLES[:2], proba):
        scores = []
        for word in SENTIMENT.words[0] + SENTIMENT.words[1]:
            p = bpe_tokenizer(f"{example['text']} It was")["input_ids"]
            full = bpe_tokenizer(f"{example['text']} It was {word} overall.")["input_ids"]
            with torch.no_grad():
                lp = tiny_causal(input_ids=torch.tensor([full])).logits[0].log_softmax(-1)
            scores.append(sum(lp[t - 1, full[t]].item() for t in range(len(p), len(full))))
        np.testing.assert_allclose(row, _to_proba(scores, [0, 0, 1, 1], 2), atol=1e-5)


def test_mlm_parity_with_hand_computation(tiny_mlm, wordpiece_tokenizer):
    model = _model(tiny_mlm, wordpiece_tokenizer, text="{{ text }} It was {{ mask }}.")
    proba = model.predict_proba(EXAMPLES)
    ids = [wordpiece_tokenizer.convert_tokens_to_ids(w) for w in ["terrible", "bad", "great", "good"]]
    for example, row in zip(EXAMPLES, proba):
        enc = wordpiece_tokenizer(f"{example['text']} It was [MASK].", return_tensors="pt")
        where = enc["input_ids"][0].tolist().index(wordpiece_tokenizer.mask_token_id)
        with torch.no_grad():
            lp = tiny_mlm(**enc).logits[0, where].log_softmax(-1)
        np.testing.assert_allclose(row, _to_proba([lp[i].item() for i in ids], [0, 0, 1, 1], 2), atol=1e-5)


def test_mlm_multi_token_word_gets_one_mask_per_token(tiny_mlm, wordpiece_tokenizer):
    verbalizer = Verbalizer({0: ["unwatchable"], 1: ["great"]})
    pieces = wordpiece_tokenizer.tokenize("unwatchable")
    assert len(pieces) > 1
    model = _model(tiny_mlm, wordpiece_tokenizer, text="{{ text }} It was {{ mask }}.", verbalizer=verbalizer)
    batch = model.encode(EXAMPLES[:1])
    n_masks = (batch.input_ids == wordpiece_tokenizer.mask_token_id).sum(-1).tolist()
    assert sorted(n_masks) == [1, len(pieces)]
    enc = wordpiece_tokenizer(f"{EXAMPLES[0]['text']} It was " + "[MASK]" * len(pieces) + ".", return_tensors="pt")
    where = [i for i, t in enumerate(enc["input_ids"][0].tolist()) if t == wordpiece_tokenizer.mask_token_id]
    with torch.no_grad():
        lp = tiny_mlm(**enc).logits[0].log_softmax(-1)
    expected = sum(lp[p, wordpiece_tokenizer.convert_tokens_to_ids(t)].item() for p, t in zip(where, pieces))
    with torch.no_grad():
        scores = model.forward(batch)
    assert scores[0, 0].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("head", ["causal", "mlm"])
def test_batch_size_and_padding_do_not_change_results(head, tiny_causal, bpe_tokenizer, tiny_mlm, wordpiece_tokenizer):
    backbone, tok = (tiny_causal, bpe_tokenizer) if head == "causal" else (tiny_mlm, wordpiece_tokenizer)
    one = _model(backbone, tok, batch_size=1).predict_proba(EXAMPLES)
    many = _model(backbone, tok, batch_size=3).predict_proba(EXAMPLES)
    np.testing.assert_allclose(one, many, atol=1e-5)
    assert one.shape == (4, 2)
    np.testing.assert_allclose(one.sum(-1), 1.0, atol=1e-6)


def test_predict_score_and_single_example(tiny_causal, bpe_tokenizer):
    model = _model(tiny_causal, bpe_tokenizer)
    predicted = model.predict(EXAMPLES)
    assert set(predicted) <= {0, 1} and len(predicted) == 4
    accuracy = model.score(EXAMPLES)
    assert accuracy == np.mean([p == e["label"] for p, e in zip(predicted, EXAMPLES)])
    assert model.predict(EXAMPLES[0]) == predicted[:1]
    assert model.predict([]) == [] and model.predict_proba([]).shape == (0, 2)


def test_content_free_calibration_divides_by_prior(tiny_causal, bpe_tokenizer):
    raw = _model(tiny_causal, bpe_tokenizer)
    cal = _model(tiny_causal, bpe_tokenizer, calibrate="content_free")
    proba = cal.predict_proba(EXAMPLES)
    free = raw.predict_proba([{"text": t} for t in ("N/A", "", "[MASK]")]).mean(0)
    expected = raw.predict_proba(EXAMPLES) / free
    np.testing.assert_allclose(proba, expected / expected.sum(-1, keepdims=True), atol=1e-5)


def test_batch_calibration_centres_the_label_distribution(tiny_causal, bpe_tokenizer):
    many = EXAMPLES * 4  # 16: enough to estimate a prior on the inputs themselves
    cal = _model(tiny_causal, bpe_tokenizer, calibrate="batch")
    raw = _model(tiny_causal, bpe_tokenizer).predict_proba(many)
    expected = raw / raw.mean(0)
    with pytest.warns(UserWarning, match="without a fitted prior"):
        np.testing.assert_allclose(cal.predict_proba(many), expected / expected.sum(-1, keepdims=True), atol=1e-5)
    cal.fit_calibration(many)  # a fitted prior is used for later inputs, even one at a time
    np.testing.assert_allclose(
        cal.predict_proba(EXAMPLES[:1])[0], (expected / expected.sum(-1, keepdims=True))[0], atol=1e-5
    )


def test_batch_calibration_without_a_prior_refuses_a_single_example(tiny_causal, bpe_tokenizer):
    """One example would be its own prior: every prediction would be the first label."""
    cal = _model(tiny_causal, bpe_tokenizer, calibrate="batch")
    with pytest.raises(DataError, match=r"1 input\(s\) are too few .* call model.fit_calibration\(unlabeled\)"):
        cal.predict(EXAMPLES[:1])
    with pytest.raises(DataError, match="needs unlabeled examples"):
        cal.fit_calibration([])


def test_chat_template_wraps_user_message(tiny_causal, bpe_tokenizer):
    model = _model(
        tiny_causal,
        bpe_tokenizer,
        text="Review: {{ text }}\nPositive or negative?\n{{ mask }}",
        verbalizer=Verbalizer({0: ["Negative"], 1: ["Positive"]}),
    )
    plain = model.encode(EXAMPLES[:1])
    chat = PromptModel(tiny_causal, bpe_tokenizer, Template(model.template.text, chat=True), model.verbalizer)
    batch = chat.encode(EXAMPLES[:1])
    text = bpe_tokenizer.decode(batch.input_ids[0])
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert "Review: a charming" in text and batch.input_ids.shape[1] > plain.input_ids.shape[1]


def test_bad_labels_and_rows_are_named(tiny_causal, bpe_tokenizer):
    model = _model(tiny_causal, bpe_tokenizer)
    with pytest.raises(VerbalizerError, match=r"row 1: label 'positive' is not one of"):
        model.score([EXAMPLES[0], {"text": "x", "label": "positive"}])
    with pytest.raises(PromptkitError, match="row 0 has no 'label'"):
        model.score([{"text": "x"}])
    with pytest.raises(PromptkitError, match=r"invalid calibrate='cc'; valid are"):
        _model(tiny_causal, bpe_tokenizer, calibrate="cc")


def test_word_the_tokenizer_cannot_spell_is_an_error(tiny_mlm, wordpiece_tokenizer):
    """Found when the model is built, not at the first prediction."""
    with pytest.raises(VerbalizerError, match=r"cannot be represented.*\[UNK\]"):
        _model(tiny_mlm, wordpiece_tokenizer, verbalizer=Verbalizer({0: ["\u2603\u2604"], 1: ["great"]}))


def test_save_and_load_round_trip(tiny_causal, bpe_tokenizer, tmp_path):
    model = _model(tiny_causal, bpe_tokenizer, calibrate="batch")
    model.fit_calibration(EXAMPLES)
    model.save_pretrained(str(tmp_path / "saved"))
    assert not list((tmp_path / "saved").rglob("*.bin")) and (tmp_path / "saved/backbone/model.safetensors").exists()
    loaded = PromptModel.from_pretrained(str(tmp_path / "saved"))
    assert loaded.template == model.template and loaded.verbalizer == model.verbalizer
    assert loaded.calibrate == "batch" and torch.allclose(loaded.calibration_, model.calibration_)
    np.testing.assert_allclose(loaded.predict_proba(EXAMPLES), model.predict_proba(EXAMPLES), atol=1e-6)


def test_local_directory_backbone(tiny_mlm, wordpiece_tokenizer, tmp_path):
    """The hub code path with a local folder: any transformers checkpoint directory loads."""
    tiny_mlm.save_pretrained(tmp_path / "ckpt")
    wordpiece_tokenizer.save_pretrained(tmp_path / "ckpt")
    model = PromptModel.from_pretrained(
        str(tmp_path / "ckpt"), template=Template("{{ text }} It was {{ mask }}."), verbalizer=SENTIMENT
    )
    assert model.head == "mlm"
    reference = _model(tiny_mlm, wordpiece_tokenizer, text="{{ text }} It was {{ mask }}.")
    np.testing.assert_allclose(model.predict_proba(EXAMPLES), reference.predict_proba(EXAMPLES), atol=1e-6)
    with pytest.raises(PromptkitError, match="needs template"):
        PromptModel.from_pretrained(str(tmp_path / "ckpt"))


def test_content_free_calibration_on_a_masked_lm(tiny_mlm, wordpiece_tokenizer):
    """ "[MASK]" is a content-free string for causal LMs but the real mask for BERT: it is skipped there."""
    raw = _model(tiny_mlm, wordpiece_tokenizer, text="{{ text }} It was {{ mask }}.")
    cal = _model(tiny_mlm, wordpiece_tokenizer, text="{{ text }} It was {{ mask }}.", calibrate="content_free")
    free = raw.predict_proba([{"text": t} for t in ("N/A", "")]).mean(0)
    expected = raw.predict_proba(EXAMPLES) / free
    np.testing.assert_allclose(cal.predict_proba(EXAMPLES), expected / expected.sum(-1, keepdims=True), atol=1e-5)
