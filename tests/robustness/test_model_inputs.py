"""Bad input to the public API of a model: options, examples and labels. Each case names what was wrong."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from _train_worker import KEYWORD, TEMPLATE, VERBALIZER

from promptkit import (
    ConfigError,
    DataError,
    PromptModel,
    StrategyError,
    Template,
    TemplateError,
    VerbalizerError,
    get_strategy,
    load_task,
    sample_k_shot,
)


@pytest.fixture(scope="module")
def model(tiny_causal, bpe_tokenizer):
    return PromptModel(tiny_causal, bpe_tokenizer, TEMPLATE, VERBALIZER)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_length": "64"}, r"max_length='64' is invalid"),
        ({"max_length": 4}, r"max_length=4 is invalid: expected an int >= 8"),
        ({"max_length": 100_000}, r"max_length=100000 exceeds the backbone's 256 positions"),
        ({"batch_size": 2.5}, r"batch_size=2.5 is invalid: expected an int >= 1"),
        ({"batch_size": True}, r"batch_size=True is invalid"),
        ({"head": "MLM"}, r"invalid head='MLM'; valid are \['mlm', 'causal'\]\. Did you mean 'mlm'\?"),
        ({"head": "bogus"}, r"invalid head='bogus'"),
        ({"head": "mlm"}, r"head='mlm' does not match the backbone: LlamaForCausalLM is a causal LM"),
        ({"calibrate": "contentfree"}, r"Did you mean 'content_free'\?"),
        ({"combine": "max"}, r"invalid combine='max'; valid are \['logsumexp', 'mean'\]"),
    ],
)
def test_bad_model_options_name_the_option_and_value(options, message, tiny_causal, bpe_tokenizer):
    with pytest.raises(ConfigError, match=message):
        PromptModel(tiny_causal, bpe_tokenizer, TEMPLATE, VERBALIZER, **options)


@pytest.mark.parametrize(
    ("examples", "error", "message"),
    [
        ("a plain string", DataError, r"got a str; pass a dict"),
        (b"bytes", DataError, r"got a bytes"),
        (["text"], DataError, r"Item 0 is a str, not a dict"),
        ([{"text": "ok"}, 5], DataError, r"Item 1 is a int, not a dict"),
        (42, DataError, r"Unsupported data type builtins.int"),
        ([{"txt": "typo"}], TemplateError, r"row 0: .*needs field 'text'.*Did you mean 'txt'\?"),
        ([{"text": None}], TemplateError, r"row 0: .*field 'text' is None"),
        ([{"text": "ok"}, {"text": math.nan}], TemplateError, r"row 1: .*field 'text' is nan"),
        (pd.DataFrame({"text": ["ok", None]}), TemplateError, r"row 1: .*field 'text' is None"),
    ],
)
def test_bad_examples_name_the_row_and_field(examples, error, message, model):
    with pytest.raises(error, match=message):
        model.predict_proba(examples)


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        ([{"text": "a"}], DataError, r"row 0 has no 'label' field"),
        ([{"text": "a", "label": "1"}], VerbalizerError, r"row 0: label '1' is not one of .*convert the labels"),
        (
            [{"text": "a", "label": 7}],
            VerbalizerError,
            r"row 0: label 7 is not one of the verbalizer's labels \[0, 1\]",
        ),
        ([{"text": "a", "label": 1}, {"text": "b", "label": None}], VerbalizerError, r"row 1: label None"),
        ([], DataError, r"score\(\) needs at least one labelled example"),
    ],
)
def test_bad_labels_name_the_row(rows, error, message, model):
    with pytest.raises(error, match=message):
        model.score(rows)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda m: PromptModel(m.backbone, m.tokenizer, "{{ text }} {{ mask }}", VERBALIZER),
            ConfigError,
            r"template must be a promptkit Template, got str",
        ),
        (
            lambda m: PromptModel(m.backbone, m.tokenizer, TEMPLATE, {0: ["bad"]}),
            ConfigError,
            r"verbalizer must be a promptkit Verbalizer, got dict",
        ),
        (
            lambda m: m.with_prompt(verbalizer={0: ["bad"], 1: ["good"]}),
            ConfigError,
            r"verbalizer must be a promptkit Verbalizer, got dict",
        ),
        (lambda m: m.attach("prefix"), ConfigError, r"attach\(\) takes a promptkit.addons.AddOn, got str"),
        (
            lambda m: PromptModel.from_pretrained(
                "smollm2-135m", template=TEMPLATE, verbalizer=VERBALIZER, batchsize=4
            ),
            ConfigError,
            r"no option 'batchsize'\. Did you mean 'batch_size'\?",
        ),
        (lambda m: sample_k_shot(KEYWORD, 0, seed=1), DataError, r"k must be a positive int, got 0"),
        (lambda m: sample_k_shot(KEYWORD, "2", seed=1), DataError, r"k must be a positive int, got '2'"),
        (lambda m: sample_k_shot(KEYWORD, 9, seed=1), DataError, r"Class 0 has only 8 examples, fewer than k=9"),
        (
            lambda m: sample_k_shot(KEYWORD, 2, seed=1, label_key="lable"),
            DataError,
            r"Did you mean label_key='label'\?",
        ),
        (lambda m: load_task("sst-2"), DataError, r"Unknown task 'sst-2'.*Did you mean 'sst2'\?"),
        (lambda m: load_task("sst2", "validation"), DataError, r"Unknown split of task 'sst2' 'validation'"),
        (lambda m: get_strategy("finetunes"), StrategyError, r"Did you mean 'finetune'\?"),
        (lambda m: get_strategy("finetune", lr=1e-3), StrategyError, r"no parameter 'lr'"),
        (lambda m: get_strategy("zero_shot", calibrate="Batch"), StrategyError, r"Did you mean 'batch'\?"),
        (lambda m: get_strategy("finetune", config=[1]), ConfigError, r"TrainConfig settings must be a mapping"),
        (lambda m: get_strategy("finetune").fit(m.clone(), []), DataError, r"needs at least one training example"),
        (lambda m: Template(123), TemplateError, r"text must be a non-empty str, got 123"),
    ],
)
def test_bad_arguments_are_value_errors_that_name_the_argument(call, error, message, model):
    with pytest.raises(error, match=message) as caught:
        call(model)
    assert isinstance(caught.value, ValueError)
