"""Chinese prompts (issue 15): FewCLUE's TNEWS and OCNLI, the Chinese catalog, text handling.

Real data (FewCLUE in shared/data; a missing copy is a skip, see conftest) and real tokenizers:
SmolLM2's byte-level BPE, which spells most Hanzi as two or three byte tokens, and Gemma 3's
SentencePiece BPE, which has whole-word Chinese tokens.
"""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from promptkit import DataError, Template, Verbalizer, VerbalizerError, load_task
from promptkit.backbones import resolve
from promptkit.catalog import list_templates, load_template, load_verbalizer, paired_verbalizer
from promptkit.cloze import ClozeEncoder
from promptkit.label_words import LabelWordTable
from promptkit.tasks import TNEWS_LABEL_NAMES, data_root, get_task
from promptkit.template_filters import strip_punct

CHINESE_TEMPLATES = [n for task in ("tnews", "ocnli", "zh_sentiment") for n in list_templates(task)]
BACKBONES = ["smollm2-135m", "gemma3-270m"]
_TOKENIZERS: dict[str, object] = {}


@pytest.fixture(params=BACKBONES)
def tokenizer(request):
    """The real tokenizer of each backbone (Gemma's is read from its dense cache, made on first use)."""
    alias = request.param
    if alias not in _TOKENIZERS:
        _TOKENIZERS[alias] = AutoTokenizer.from_pretrained(resolve(alias)[0])
    return _TOKENIZERS[alias]


def _prefix_text(prompt) -> str:
    return "".join(s.text for s in prompt.before_mask)


# ------------------------------------------------------------------ FewCLUE data
@pytest.mark.parametrize(
    ("task", "split", "n_rows", "per_class"),
    [
        ("tnews", "train_0", 240, 16),
        ("tnews", "dev_4", 240, 16),
        ("tnews", "test_public", 2010, 134),
        ("ocnli", "train_2", 32, None),
        ("ocnli", "test_public", 2520, 840),
    ],
)
def test_fewclue_splits_load_with_their_labels(task, split, n_rows, per_class):
    rows = load_task(task, split)
    info = get_task(task)
    assert len(rows) == n_rows
    assert all(set(row) >= {*info.fields, "label"} and row["label"] in info.labels for row in rows)
    assert all(type(row["label"]) is type(info.labels[0]) for row in rows)
    if per_class is not None:
        assert {label: sum(r["label"] == label for r in rows) for label in info.labels} == dict.fromkeys(
            info.labels, per_class
        )


def test_unlabeled_splits_have_no_labels():
    assert {row["label"] for row in load_task("tnews", "unlabeled", limit=50)} == {None}
    assert {row["label"] for row in load_task("ocnli", "test", limit=50)} == {None}


def test_tnews_label_names_are_fewclues():
    path = data_root() / "fewclue" / "tnews" / "label_index2en2zh.json"
    if not path.is_file():
        pytest.skip(f"FewCLUE's label file is not here: {path}")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert {int(r["label"]): (r["label_desc"], r["label_zh"]) for r in records} == TNEWS_LABEL_NAMES
    assert tuple(TNEWS_LABEL_NAMES) == get_task("tnews").labels
    names = load_verbalizer("tnews/names")
    assert names.words == tuple((zh,) for _, zh in TNEWS_LABEL_NAMES.values())


@pytest.mark.parametrize(("task", "split", "closest"), [("tnews", "train_5", "train_4"), ("ocnli", "dev5", "dev_")])
def test_unknown_fewclue_split_lists_the_valid_ones(task, split, closest):
    with pytest.raises(DataError) as err:
        load_task(task, split)
    message = str(err.value)
    assert f"Unknown split of task {task!r} {split!r}" in message
    for valid in ("train_0", "train_4", "dev_0", "dev_4", "test_public", "clue_dev"):
        assert valid in message
    assert f"Did you mean '{closest}" in message


def test_ocnli_has_no_unlabeled_pool():
    """FewCLUE's OCNLI unlabeled.json is not in the snapshot (PROVENANCE.md): not a split here."""
    with pytest.raises(DataError, match="valid: train_0.*test_public"):
        load_task("ocnli", "unlabeled")


# ------------------------------------------------------------------ rendering and filters
def test_no_space_is_inserted_between_chinese_text_and_fields():
    template = Template("{{ premise | strip_punct }}？{{ mask }}，{{ hypothesis }}")
    prompt = template.render({"premise": "我是打过,就是没人接.", "hypothesis": "对方没有接听"})
    assert prompt.to_text() == "我是打过,就是没人接？[MASK]，对方没有接听"
    sentiment = load_template("zh_sentiment/all_in_all")
    assert sentiment.render({"text": "我喜欢这个电影。"}).to_text() == "我喜欢这个电影。总而言之，它是一个[MASK]电影。"


@pytest.mark.parametrize(
    ("text", "stripped"),
    [
        ("就是没人接。", "就是没人接"),
        ("真的吗？！", "真的吗"),
        ("首先，其次；然后：", "首先，其次；然后"),
        ("苹果、香蕉、", "苹果、香蕉"),
        ("他说“好”。", "他说“好"),  # like PET's ASCII rule, closing quotes are punctuation too
        ("等等……", "等等"),
        ("半角标点.", "半角标点"),
        ("全角句点．", "全角句点"),
        ("混合,。 ", "混合"),
        ("没有标点", "没有标点"),
        ("It rains!? ", "It rains"),
    ],
)
def test_strip_punct_knows_full_width_punctuation(text, stripped):
    assert strip_punct(text) == stripped
    assert Template("{{ t | strip_punct }}？{{ mask }}").render({"t": text}).to_text() == f"{stripped}？[MASK]"


def test_catalog_examples_are_chinese_rows():
    """The tnews and ocnli examples are test_public rows (tests/test_catalog.py checks that); here: real Hanzi."""
    for name in CHINESE_TEMPLATES:
        example = load_template(name).example
        text = "".join(str(example[k]) for k in example if k != "label")
        assert sum("\u4e00" <= c <= "\u9fff" for c in text) >= 5, name


# ------------------------------------------------------------------ label words in context
@pytest.mark.parametrize("name", [n for n in CHINESE_TEMPLATES if not load_template(n).chat])
def test_label_words_follow_the_prompt_without_a_space(name, tokenizer):
    """No space before the mask: the word's tokens are its own, and prefix + word decodes to the text."""
    template = load_template(name)
    prompt = template.render(template.example)
    prefix = _prefix_text(prompt)
    assert not prefix.endswith(" ")
    table = LabelWordTable(load_verbalizer(paired_verbalizer(name)), tokenizer)
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    for word, ids in zip(table.words, table.ids(False)):
        assert tokenizer.decode(list(ids)) == word
        assert tokenizer.decode(prefix_ids + list(ids)) == prefix + word
        joint = tokenizer(prefix + word, add_special_tokens=False)["input_ids"]
        if joint[: len(prefix_ids)] == prefix_ids:  # no token merges across the boundary: then exactly these
            assert tuple(joint[len(prefix_ids) :]) == ids


def test_multi_character_words_are_multi_token_words_in_context(bpe_tokenizer):
    """SmolLM2 spells 体育 as five byte tokens: one next-token read plus four teacher-forced ones."""
    template, verbalizer = load_template("tnews/category_end"), load_verbalizer("tnews/names")
    table = LabelWordTable(verbalizer, bpe_tokenizer)
    sports = table.words.index("体育")
    assert len(table.ids(False)[sports]) > 1
    batch = ClozeEncoder(bpe_tokenizer, "causal", table, 128).encode([template.render(template.example)])
    cells = batch.cell.tolist()
    for w, ids in enumerate(table.ids(False)):
        read = [tuple(g) for g, c in zip(batch.gather.tolist(), cells) if c == w]
        assert [token for _, _, token in read] == list(ids)
    first_row = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    assert bpe_tokenizer.decode(first_row) == "新闻：日本男篮近期动作频频，中国队的未来劲敌会是他们吗？\n类别："


@pytest.mark.parametrize("name", ["ocnli/pet", "zh_sentiment/all_in_all", "tnews/paren"])
def test_fill_in_rows_hold_the_word_without_spaces(name, bpe_tokenizer):
    """A causal LM scores a mid-prompt mask with each word written in; no space appears around it."""
    template = load_template(name)
    prompt = template.render(template.example)
    table = LabelWordTable(load_verbalizer(paired_verbalizer(name)), bpe_tokenizer)
    batch = ClozeEncoder(bpe_tokenizer, "causal", table, 256).encode([prompt])
    rows = zip(batch.input_ids, batch.attention_mask)
    texts = [bpe_tokenizer.decode(row[mask.bool()].tolist()) for row, mask in rows]
    assert texts == [prompt.to_text(mask_text=word) for word in table.words]


@pytest.mark.parametrize("name", [n for n in CHINESE_TEMPLATES if load_template(n).chat])
def test_chat_templates_put_the_word_first_in_the_assistant_turn(name, bpe_tokenizer):
    template = load_template(name)
    table = LabelWordTable(load_verbalizer(paired_verbalizer(name)), bpe_tokenizer)
    batch = ClozeEncoder(bpe_tokenizer, "causal", table, 512).encode([template.render(template.example)])
    text = bpe_tokenizer.decode(batch.input_ids[0][batch.attention_mask[0].bool()].tolist())
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\n" in text


# ------------------------------------------------------------------ truncation
HANZI = st.text(alphabet=st.sampled_from(list("我们的新闻中国体育经济电影好差是不了人在有这上个")), max_size=120)


def _check_truncation(premise: str, hypothesis: str, max_length: int, tokenizer) -> None:
    """Characters leave the longest input only, from its end; the template text stays whole."""
    template = Template("前提：{{ premise }}\n假设：{{ hypothesis }}\n两者的关系：{{ mask }}")
    table = LabelWordTable(load_verbalizer("ocnli/relation"), tokenizer)
    batch = ClozeEncoder(tokenizer, "causal", table, max_length).encode(
        [template.render({"premise": premise, "hypothesis": hypothesis})]
    )
    ids = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    assert len(ids) + table.max_tokens() <= max_length
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith("前提：") and text.endswith("\n两者的关系：") and text.count("\n假设：") == 1
    kept_premise, kept_hypothesis = text[len("前提：") : -len("\n两者的关系：")].split("\n假设：")
    assert premise.startswith(kept_premise) and hypothesis.startswith(kept_hypothesis)

    def n_tokens(s: str) -> int:
        return len(tokenizer(s, add_special_tokens=False)["input_ids"])

    slack = 4  # one Hanzi is at most 3 byte tokens; cuts fall on character starts
    if kept_premise != premise:
        assert n_tokens(kept_premise) + slack >= n_tokens(kept_hypothesis)
    if kept_hypothesis != hypothesis:
        assert n_tokens(kept_hypothesis) + slack >= n_tokens(kept_premise)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(premise=HANZI, hypothesis=HANZI, max_length=st.integers(min_value=40, max_value=200))
def test_truncation_drops_characters_from_the_longest_input(premise, hypothesis, max_length, bpe_tokenizer):
    _check_truncation(premise, hypothesis, max_length, bpe_tokenizer)


def test_truncation_on_real_ocnli_rows(tokenizer):
    rng = random.Random(15)
    rows = load_task("ocnli", "test_public")
    for row in rng.sample(rows, 20):
        premise = row["premise"] * rng.randint(1, 6)
        _check_truncation(premise, row["hypothesis"], rng.randint(30, 90), tokenizer)


# ------------------------------------------------------------------ bad input
def test_partly_unknown_label_word_warns_with_its_name(wordpiece_tokenizer):
    """splade-tiny's WordPiece vocabulary has a few Hanzi: 故事 is [UNK] 事."""
    table = LabelWordTable(Verbalizer({0: ["故事"], 1: ["good"]}, name="zh"), wordpiece_tokenizer)
    with pytest.warns(UserWarning, match=r"label word '故事' is partly unknown.*\['\[UNK\]', '事'\]"):
        table.ids(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table.ids(True)  # once per word, not per spelling


def test_wholly_unknown_label_word_is_refused(wordpiece_tokenizer):
    table = LabelWordTable(Verbalizer({0: ["娱乐"], 1: ["good"]}), wordpiece_tokenizer)
    with pytest.raises(VerbalizerError, match=r"label word '娱乐' cannot be represented.*\['\[UNK\]', '\[UNK\]'\]"):
        table.ids(False)


@pytest.mark.parametrize(("word", "standard"), [("Ｙｅｓ", "Yes"), ("１００", "100"), ("ｇood", "good"), ("ｶ", "カ")])
def test_full_and_half_width_letters_and_digits_are_refused(word, standard):
    with pytest.raises(VerbalizerError, match=f"label word {word!r} has the full-width or half-width forms") as err:
        Verbalizer({"entailment": [word], "contradiction": ["不是"]})
    assert f"write {standard!r}" in str(err.value)


@pytest.mark.parametrize("word", ["好", "是的！", "对，", "ok", "100"])
def test_hanzi_ascii_and_full_width_punctuation_are_accepted(word):
    assert Verbalizer({0: [word], 1: ["差"]}).words[0] == (word,)


# ------------------------------------------------------------------ a real model
@pytest.mark.real_model
def test_smollm2_scores_tnews_with_every_chinese_tnews_template():
    from promptkit import PromptModel

    rows = load_task("tnews", "test_public", limit=2)
    names = list_templates("tnews")
    base = PromptModel.from_pretrained(
        "smollm2-135m", template=load_template(names[0]), verbalizer=load_verbalizer(paired_verbalizer(names[0]))
    )
    for name in names:
        model = base.with_prompt(template=load_template(name), verbalizer=load_verbalizer(paired_verbalizer(name)))
        proba = model.predict_proba(rows)
        assert proba.shape == (2, 15)
        np.testing.assert_allclose(proba.sum(-1), 1.0, atol=1e-5)
