"""Malformed verbalizers, label words a tokenizer cannot tell apart, and round trips."""

from __future__ import annotations

import json
import warnings

import pytest
import yaml

from promptkit import Verbalizer, VerbalizerError
from promptkit.catalog import read_verbalizers
from promptkit.errors import CatalogError
from promptkit.label_words import LabelWordTable


@pytest.mark.parametrize(
    ("label_words", "match"),
    [
        ({}, "has no labels"),
        ([], "has no labels"),
        ("great", "has no labels"),
        ({0: []}, "label 0 has no label words"),
        ({0: 5}, r"label 0: label words must be a list of str, got 5 \(int\)"),
        ({0: {"good"}}, r"label 0: label words must be a list of str, got \{'good'\} \(set\)"),
        ({0: [5], 1: ["good"]}, "label 0: label word 5 is a int, not a str"),
        ({0: [None], 1: ["good"]}, "label 0: label word None is a NoneType, not a str"),
        ({0: [True], 1: ["No"]}, "label word True is a bool, not a str.*quote"),
        ({0: ["good", "good"]}, "label 0 lists the word 'good' twice"),
        ({0: ["good"], 1: ["good"]}, "word 'good' is listed under labels 0 and 1"),
        ({0: [" bad"], 1: ["good"]}, "label word ' bad' is empty or has surrounding spaces"),
        ({0: ["bad\t"], 1: ["good"]}, "label word 'bad\\\\t' is empty or has surrounding spaces"),
        ({0: ["   "], 1: ["good"]}, "label word '   ' is empty"),
        ({0: [""], 1: ["good"]}, "label word '' is empty"),
        ({None: ["x"]}, "label None is a NoneType; labels must be int, str or bool"),
        ({0.5: ["x"]}, "label 0.5 is a float; labels must be int, str or bool"),
        ({(0, 1): ["x"]}, r"label \(0, 1\) is a tuple"),
    ],
)
def test_malformed_verbalizers_name_the_label_and_word(label_words, match):
    with pytest.raises(VerbalizerError, match=match) as caught:
        Verbalizer(label_words, name="v")
    assert isinstance(caught.value, ValueError)


def test_the_name_must_be_a_str():
    with pytest.raises(VerbalizerError, match=r"verbalizer name must be a str, got 3 \(int\)"):
        Verbalizer({0: ["bad"]}, name=3)


# ------------------------------------------------------------- label words vs the tokenizer
@pytest.mark.parametrize(
    ("label_words", "pair"),
    [
        ({0: ["good"], 1: ["Good"]}, r"'good' \(label 0\) and label word 'Good' \(label 1\)"),
        ({0: ["Yes"], 1: ["yes"]}, r"'Yes' \(label 0\) and label word 'yes' \(label 1\)"),
        ({"neg": ["BAD"], "pos": ["bad"]}, r"'BAD' \(label 'neg'\) and label word 'bad' \(label 'pos'\)"),
        ({0: ["café"], 1: ["cafe"]}, r"'café' \(label 0\) and label word 'cafe' \(label 1\)"),
        ({0: ["good", "fine"], 1: ["great", "Good"]}, r"'good' \(label 0\) and label word 'Good' \(label 1\)"),
    ],
)
@pytest.mark.parametrize("space", [True, False], ids=["after_space", "line_start"])
def test_labels_an_uncased_tokenizer_merges_are_refused(wordpiece_tokenizer, label_words, pair, space):
    table = LabelWordTable(Verbalizer(label_words, name="v"), wordpiece_tokenizer)
    with pytest.raises(VerbalizerError, match=pair) as caught:
        table.ids(space)
    message = str(caught.value)
    assert "verbalizer 'v'" in message and "same tokens [" in message
    assert "lower-cases" in message and "choose label words that stay distinct" in message


def test_labels_whose_words_all_merge_are_called_ties(wordpiece_tokenizer):
    table = LabelWordTable(Verbalizer({0: ["good", "Fine"], 1: ["Good", "fine"]}), wordpiece_tokenizer)
    with pytest.raises(VerbalizerError, match="exactly the same tokens, so they always tie"):
        table.ids(True)
    partial = LabelWordTable(Verbalizer({0: ["good", "fine"], 1: ["Good", "great"]}), wordpiece_tokenizer)
    with pytest.raises(VerbalizerError) as caught:
        partial.ids(True)
    assert "always tie" not in str(caught.value)


@pytest.mark.parametrize("space", [True, False])
def test_a_cased_tokenizer_keeps_good_and_Good_apart(bpe_tokenizer, space):
    table = LabelWordTable(Verbalizer({0: ["good"], 1: ["Good"]}), bpe_tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good, capital = table.ids(space)
    assert good != capital


def test_same_label_twins_are_kept_with_one_warning(wordpiece_tokenizer):
    table = LabelWordTable(Verbalizer({0: ["good", "Good"], 1: ["bad"]}, name="v"), wordpiece_tokenizer)
    with pytest.warns(UserWarning, match=r"label 0 lists 'good' and 'Good'.*counts twice.*drop one") as caught:
        ids = table.ids(True)
        table.ids(False)
    assert len(caught) == 1
    assert ids[0] == ids[1] != ids[2] and len(ids) == len(table.words) == 3


# ------------------------------------------------------------------------ to_dict / from_dict
@pytest.mark.parametrize(
    "label_words",
    [
        {1: ["great", "good"], 0: ["terrible"]},
        {False: ["No"], True: ["Yes"]},
        {"entailment": ["Yes"], "not_entailment": ["No"]},
    ],
    ids=["int_reversed", "bool", "str"],
)
def test_yaml_keeps_label_types_and_order(label_words):
    verbalizer = Verbalizer(label_words, name="task/v")
    data = verbalizer.to_dict()
    assert data == {"name": "task/v", "label_words": {k: list(v) for k, v in label_words.items()}}
    again = Verbalizer.from_dict(yaml.safe_load(yaml.safe_dump(data, sort_keys=False)))
    assert again == verbalizer
    assert again.labels == verbalizer.labels
    assert [type(label) for label in again.labels] == [type(label) for label in verbalizer.labels]


def test_json_turns_int_labels_into_strings_and_says_so_on_use():
    verbalizer = Verbalizer({0: ["terrible"], 1: ["great"]}, name="sst2")
    again = Verbalizer.from_dict(json.loads(json.dumps(verbalizer.to_dict())))
    assert again.labels == ("0", "1")  # documented: JSON object keys are strings
    assert again != verbalizer
    with pytest.raises(VerbalizerError, match=r"'0' \(str\) but the example label is a int; convert"):
        again.index(0)


def test_json_keeps_str_labels():
    verbalizer = Verbalizer({"entailment": ["Yes"], "contradiction": ["No"]})
    again = Verbalizer.from_dict(json.loads(json.dumps(verbalizer.to_dict())))
    assert again == verbalizer and again.labels == verbalizer.labels


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"label_word": {0: ["bad"]}}, "unknown key 'label_word'. Did you mean 'label_words'"),
        ({"nmae": "x", "label_words": {0: ["bad"]}}, "unknown key 'nmae'. Did you mean 'name'"),
        ({"name": "x"}, "has no 'label_words'"),
        ([{0: ["bad"]}], "must be a mapping .*got list"),
        ({"label_words": {0: "bad"}, "name": 7}, "verbalizer name must be a str, got 7"),
        ({"label_words": {0: [1]}}, "label word 1 is a int, not a str"),
    ],
)
def test_from_dict_rejects_bad_data(data, match):
    with pytest.raises(VerbalizerError, match=match):
        Verbalizer.from_dict(data)


def test_yaml_booleans_in_a_verbalizer_file_are_catalog_errors(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("task: t\nverbalizers:\n  yn:\n    label_words: {0: [yes], 1: [no]}\n")
    with pytest.raises(CatalogError, match="label word True is a bool, not a str.*quote"):
        read_verbalizers(path)
