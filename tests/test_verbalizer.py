import pytest

from promptkit import Verbalizer, VerbalizerError


def test_labels_keep_order_and_type():
    v = Verbalizer({"entailment": ["Yes"], "contradiction": ["No"], "neutral": ["Maybe"]})
    assert v.labels == ("entailment", "contradiction", "neutral")
    assert v.index("neutral") == 2
    assert Verbalizer({1: "great", 0: "terrible"}).words == (("great",), ("terrible",))


def test_bool_labels_are_not_ints():
    v = Verbalizer({False: ["No"], True: ["Yes"]})
    assert v.index(True) == 1
    with pytest.raises(VerbalizerError):
        v.index(1)


@pytest.mark.parametrize(
    ("words", "match"),
    [
        ({}, "no labels"),
        ({0: [], 1: ["great"]}, "no label words"),
        ({0: ["good"], 1: ["good"]}, "'good' is listed under labels 0 and 1"),
        ({0: [True], 1: ["No"]}, "is a bool, not a str.*quote"),
        ({0: [" bad"], 1: ["good"]}, "surrounding spaces"),
        ({0: [""], 1: ["good"]}, "empty"),
        ({0.5: ["x"]}, "labels must be int, str or bool"),
    ],
)
def test_malformed_verbalizers_are_rejected(words, match):
    with pytest.raises(VerbalizerError, match=match):
        Verbalizer(words)


def test_unknown_label_explains_int_str_mixup():
    v = Verbalizer({0: ["terrible"], 1: ["great"]})
    with pytest.raises(VerbalizerError, match=r"'1' is not one of .*\[0, 1\].*convert"):
        v.index("1")
    with pytest.raises(VerbalizerError, match="Did you mean 'entailment'"):
        Verbalizer({"entailment": ["Yes"], "not_entailment": ["No"]}).index("entailmnt")


def test_a_word_twice_under_one_label_is_rejected():
    with pytest.raises(VerbalizerError, match="lists the word 'bad' twice"):
        Verbalizer({0: ["bad", "bad"], 1: ["good"]})
