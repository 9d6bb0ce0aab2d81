"""PromptClassifier as a scikit-learn estimator: scikit-learn's own checks, GridSearchCV, bad input.

Everything here runs on a tiny random-init Llama (1 layer, width 16) over a byte-level BPE
tokenizer of 300 tokens trained in the fixture: scikit-learn's checks predict thousands of
rows, and a 49k-token vocabulary would make each of them cost a softmax over 49k logits.

Expected failures are listed in ``expected_failed_checks`` with their reason (pytest reports
them as xfail, or xpass when float rounding happens to agree). scikit-learn itself skips
``check_array_api_input`` unless ``SCIPY_ARRAY_API=1`` is set before scipy is imported; with it
set, that check passes too (``SCIPY_ARRAY_API=1 pytest tests/test_sklearn.py -k array_api``).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks
from tokenizers import ByteLevelBPETokenizer
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from promptkit import CatalogError, DataError, PromptClassifier, StrategyError, Template, VerbalizerError

# parametrize_with_checks needs the estimators, hence the backbone folder's path, at collection;
# the module fixture below writes the folder before any test runs and removes it afterwards.
TINY = str(Path(tempfile.gettempdir()) / f"promptkit-sklearn-tiny-{os.getpid()}")
FINETUNE = {"config": {"max_steps": 2, "batch_size": 4, "progress": False}}
ESTIMATORS = [
    PromptClassifier(backbone=TINY),  # zero-shot, content-free calibration: the defaults
    PromptClassifier(backbone=TINY, strategy="finetune", strategy_params=FINETUNE, calibrate="batch"),
]
PADDING = (
    "predict_proba runs float32 forward passes over padded batches: a row's probabilities move by about 1e-7 "
    "(float rounding) with the other rows it is batched with, and this check compares them with atol=1e-7; "
    "predict (the labels) is unchanged"
)


def expected_failed_checks(estimator: PromptClassifier) -> dict[str, str]:
    """Checks that cannot hold for a language model scoring text, with the reason (scikit-learn marks them xfail)."""
    return {"check_methods_subset_invariance": PADDING}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny forward passes run fastest on one thread (two threads spin against each other on a busy CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def tiny_backbone():
    corpus = ["Text: 0.548814 -1.23457 7e-05 Label: one two three zero True False", "great terrible positive"] * 3
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1, special_tokens=["<pad>", "</s>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, pad_token="<pad>", eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(TINY)
    tokenizer.save_pretrained(TINY)
    yield TINY
    shutil.rmtree(TINY, ignore_errors=True)


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


TEXTS = ["a gem of a film", "a dull mess", "witty and warm", "tedious and flat", "great fun", "a bore"] * 2
LABELS = [1, 0, 1, 0, 1, 0] * 2


# ------------------------------------------------------------------ model selection
def test_grid_search_over_two_catalog_templates_runs_and_refits_the_best():
    templates = ["sst2/it_was", "sst2/review_sentiment"]
    search = GridSearchCV(PromptClassifier(backbone=TINY), {"template": templates}, cv=2, scoring="accuracy")
    search.fit(TEXTS, LABELS)

    assert [p["template"] for p in search.cv_results_["params"]] == templates
    assert all(0.0 <= s <= 1.0 for s in search.cv_results_["mean_test_score"])
    best = search.best_estimator_
    assert best.template == search.best_params_["template"]
    assert best.model_.template.name == search.best_params_["template"]
    # a catalog template brings its paired verbalizer: it_was -> great/terrible, review_sentiment -> positive/negative
    words = {"sst2/it_was": ("terrible", "great"), "sst2/review_sentiment": ("negative", "positive")}
    assert tuple(w[0] for w in best.model_.verbalizer.words) == words[best.template]
    assert search.predict(["a gem"]).dtype == np.asarray(LABELS).dtype


def test_grid_search_over_template_texts_and_a_pipeline():
    templates = ["Text: {{ text }} Label: {{ mask }}", "{{ text }} => {{ mask }}"]
    pipeline = make_pipeline(FunctionTransformer(lambda texts: [t.lower() for t in texts]), PromptClassifier(TINY))
    search = GridSearchCV(pipeline, {"promptclassifier__template": templates}, cv=2).fit(TEXTS, LABELS)
    assert len(search.cv_results_["params"]) == 2
    assert search.best_estimator_[-1].model_.template.text in templates


# ------------------------------------------------------------------ inputs and outputs
def test_texts_dicts_and_dataframes_give_the_same_probabilities():
    clf = PromptClassifier(TINY).fit(TEXTS, LABELS)
    from_texts = clf.predict_proba(TEXTS)
    assert np.array_equal(from_texts, clf.predict_proba([{"text": t} for t in TEXTS]))
    assert np.array_equal(from_texts, clf.predict_proba(pd.DataFrame({"text": TEXTS, "label": LABELS})))
    assert np.array_equal(from_texts, clf.predict_proba(pd.Series(TEXTS)))
    assert np.array_equal(from_texts, clf.predict_proba(np.array(TEXTS)))
    assert not hasattr(clf, "n_features_in_")  # texts have no feature count


def test_predict_returns_labels_of_y_and_proba_columns_follow_classes():
    y = np.array(["pos", "neg"] * 6)
    clf = PromptClassifier(TINY, verbalizer={"pos": "great", "neg": ["terrible", "bad"], "neutral": "fine"})
    clf.fit(TEXTS, y)

    assert list(clf.classes_) == ["neg", "pos"]  # sorted, and "neutral" (not in y) dropped
    assert clf.model_.verbalizer.labels == ("neg", "pos")
    assert clf.model_.verbalizer.words == (("terrible", "bad"), ("great",))
    proba = clf.predict_proba(TEXTS)
    assert proba.shape == (12, 2) and np.allclose(proba.sum(1), 1.0)
    predicted = clf.predict(TEXTS)
    assert predicted.dtype == y.dtype and list(predicted) == list(clf.classes_[proba.argmax(1)])
    assert clf.score(TEXTS, y) == np.mean(predicted == y)
    assert np.allclose(np.exp(clf.predict_log_proba(TEXTS)), proba)


def test_without_a_verbalizer_the_class_names_are_the_label_words():
    clf = PromptClassifier(TINY).fit(TEXTS, np.array(["one", "two", "three"] * 4))
    assert clf.model_.verbalizer.label_words == {"one": ("one",), "three": ("three",), "two": ("two",)}
    assert set(clf.predict(TEXTS)) <= {"one", "two", "three"}


def test_zero_shot_may_be_fitted_on_y_alone():
    clf = PromptClassifier(TINY, template="sst2/it_was").fit(None, [0, 1, 1])
    assert list(clf.classes_) == [0, 1] and clf.model_.calibration_ is not None
    assert clf.predict(["a gem"]).tolist()[0] in (0, 1)


def test_two_field_templates_take_dicts_and_dataframes():
    rows = [{"premise": f"it is {w}", "hypothesis": "it is"} for w in ("red", "blue", "green", "gray")]
    clf = PromptClassifier(TINY, template="{{ premise }} ? {{ mask }}, {{ hypothesis }}").fit(rows, [0, 1, 0, 1])
    assert np.array_equal(clf.predict_proba(rows), clf.predict_proba(pd.DataFrame(rows)))


def test_a_2d_array_sets_n_features_in_and_is_checked_at_predict():
    X = np.random.RandomState(0).uniform(size=(8, 3))
    clf = PromptClassifier(TINY).fit(X, [0, 1] * 4)
    assert clf.n_features_in_ == 3
    with pytest.raises(ValueError, match="X has 2 features, but PromptClassifier is expecting 3"):
        clf.predict(X[:, :2])
    clf.fit(TEXTS, LABELS)  # refitting on texts drops the feature count
    assert not hasattr(clf, "n_features_in_")


def test_finetune_trains_with_the_classifier_seed_and_is_reproducible():
    params = {"config": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-2, "progress": False}}
    first = PromptClassifier(TINY, strategy="finetune", strategy_params=params, seed=7).fit(TEXTS, LABELS)
    again = PromptClassifier(TINY, strategy="finetune", strategy_params=params, seed=7).fit(TEXTS, LABELS)
    zero_shot = PromptClassifier(TINY).fit(TEXTS, LABELS)

    assert first.strategy_.config.seed == 7 and first.strategy_.result_.steps == 3
    assert params == {"config": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-2, "progress": False}}
    assert np.array_equal(first.predict_proba(TEXTS), again.predict_proba(TEXTS))
    assert not np.allclose(first.predict_proba(TEXTS), zero_shot.predict_proba(TEXTS))  # the weights moved


def test_pickle_round_trip_keeps_predictions_and_template_objects():
    template = Template("Review: {{ text }} Verdict: {{ mask }}")
    clf = PromptClassifier(TINY, template=template, strategy="finetune", strategy_params=FINETUNE)
    clf.fit(TEXTS, LABELS)
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.template == template
    assert np.array_equal(restored.predict_proba(TEXTS), clf.predict_proba(TEXTS))
    assert restored.get_params() == clf.get_params()


def test_clone_shares_immutable_template_objects():
    template = Template("{{ text }} => {{ mask }}")
    clf = PromptClassifier(TINY, template=template, strategy_params={"config": {"max_steps": 1}})
    copy = clone(clf)
    assert copy.template is template
    assert copy.strategy_params == clf.strategy_params and copy.strategy_params is not clf.strategy_params


def test_a_saved_model_is_a_backbone_with_its_template_and_verbalizer(tmp_path):
    clf = PromptClassifier(TINY, template="sst2/it_was").fit(TEXTS, LABELS)
    clf.model_.save_pretrained(str(tmp_path / "saved"))
    again = PromptClassifier(str(tmp_path / "saved")).fit(TEXTS, LABELS)
    assert again.model_.template == clf.model_.template
    assert again.model_.verbalizer == clf.model_.verbalizer
    assert np.allclose(again.predict_proba(TEXTS), clf.predict_proba(TEXTS), atol=1e-6)


# ------------------------------------------------------------------ bad input
def test_x_and_y_of_different_lengths():
    with pytest.raises(DataError, match=r"X has 12 examples but y has 11 labels; pass exactly one label per example"):
        PromptClassifier(TINY).fit(TEXTS, LABELS[:-1])


def test_y_with_a_single_class():
    with pytest.raises(DataError, match=r"y has only one class \(1\) in 3 example\(s\).*at least two classes"):
        PromptClassifier(TINY).fit(TEXTS[:3], [1, 1, 1])


def test_y_labels_the_verbalizer_lacks_are_named():
    with pytest.raises(VerbalizerError, match=r"y has label\(s\) \[2, 3\] that the verbalizer 'sst2/great_terrible'"):
        PromptClassifier(TINY, template="sst2/it_was").fit(TEXTS[:4], [0, 1, 2, 3])
    with pytest.raises(VerbalizerError, match=r"Types differ: '0' \(str\) vs 0 \(int\).*convert y's labels"):
        PromptClassifier(TINY, verbalizer={0: "bad", 1: "good"}).fit(TEXTS[:2], ["0", "1"])


def test_dict_rows_missing_a_template_field_name_the_row_and_field():
    rows = [{"text": "a gem"}, {"txt": "a mess"}]
    with pytest.raises(DataError, match=r"X row 1 has no field 'text'.*its fields are \['txt'\]. Did you mean 'txt'"):
        PromptClassifier(TINY).fit(rows, [1, 0])
    with pytest.raises(DataError, match=r"X row 0 has no field 'text'"):
        PromptClassifier(TINY).fit(pd.DataFrame({"sentence": ["a", "b"]}), [1, 0])


def test_other_bad_input():
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        PromptClassifier(TINY).fit(TEXTS, None)
    with pytest.raises(DataError, match="the template reads 2 fields"):
        PromptClassifier(TINY, template="{{ a }} {{ b }} {{ mask }}").fit(["x", "y"], [0, 1])
    with pytest.raises(DataError, match="X is a single str"):
        PromptClassifier(TINY).fit("a gem", [1])
    with pytest.raises(CatalogError, match="Did you mean 'it_was'"):
        PromptClassifier(TINY, template="sst2/it_wsa").fit(TEXTS, LABELS)
    with pytest.raises(StrategyError, match="Did you mean 'finetune'"):
        PromptClassifier(TINY, strategy="fintune").fit(TEXTS, LABELS)
    with pytest.raises(DataError, match="strategy 'finetune' trains on examples, and X is None"):
        PromptClassifier(TINY, strategy="finetune").fit(None, LABELS)
    with pytest.raises(NotFittedError):
        PromptClassifier(TINY).predict(TEXTS)
