"""TrainConfig under bad values: non-finite floats, YAML-style strings, wrong types; the learning-rate default."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import yaml
from _train_worker import KEYWORD, TEMPLATE, VERBALIZER

from promptkit import PromptModel
from promptkit.checkpoint import trainable_state
from promptkit.errors import ConfigError
from promptkit.train import train
from promptkit.train_config import DEFAULT_LEARNING_RATE, TrainConfig

FLOATS = ["learning_rate", "warmup_ratio", "weight_decay", "max_grad_norm"]
INTS = ["batch_size", "grad_accumulation", "epochs", "max_steps", "eval_every", "patience", "seed", "save_every"]


# ------------------------------------------------------------------ floats must be finite
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", FLOATS)
def test_non_finite_floats_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**{field: value})
    assert f"TrainConfig.{field}={value!r} is invalid: expected a finite number (not nan or inf)" in str(caught.value)


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity"])
def test_non_finite_numeric_strings_are_refused_too(text):
    with pytest.raises(ConfigError, match=r"TrainConfig\.learning_rate=.* expected a finite number"):
        TrainConfig.from_dict({"learning_rate": text})


# ------------------------------------------------------------------ numeric strings (YAML reads 1e-2 as a str)
def test_yaml_exponent_without_a_dot_is_a_string_and_from_dict_converts_it():
    data = yaml.safe_load("learning_rate: 1e-2\nweight_decay: 1e-4\nbatch_size: 8\n")
    assert data["learning_rate"] == "1e-2"  # PyYAML (YAML 1.1) needs a dot: 1.0e-2
    config = TrainConfig.from_dict(data)
    assert (config.learning_rate, config.weight_decay, config.batch_size) == (0.01, 1e-4, 8)


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [("learning_rate", "1e-2", 0.01), ("learning_rate", " 3E-4 ", 3e-4), ("warmup_ratio", "0.1", 0.1),
     ("weight_decay", "0", 0.0), ("max_grad_norm", "0.5", 0.5), ("batch_size", "8", 8), ("max_steps", "20", 20),
     ("seed", "+7", 7), ("patience", "3", 3)],
)  # fmt: skip
def test_from_dict_converts_numeric_strings(field, text, value):
    config = TrainConfig.from_dict({field: text})
    assert getattr(config, field) == value and type(getattr(config, field)) is type(value)
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [("learning_rate", "fast", "expected a number"), ("warmup_ratio", "10%", "expected a number"),
     ("weight_decay", "", "expected a number"), ("max_grad_norm", "none", "expected a number"),
     ("batch_size", "eight", "expected an int"), ("max_steps", "2.5", "expected an int"),
     ("seed", "1e3", "expected an int"), ("epochs", "3.0", "expected an int")],
)  # fmt: skip
def test_from_dict_names_the_key_of_a_non_numeric_string(field, text, expected):
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict({field: text})
    assert f"TrainConfig.{field}={text!r} is invalid: {expected}" in str(caught.value)


@pytest.mark.parametrize("field", ["learning_rate", "batch_size"])
def test_the_constructor_takes_numbers_not_strings(field):
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{field}='8' is invalid: .*not str"):
        TrainConfig(**{field: "8"})


def test_a_numeric_string_still_gets_the_range_check():
    with pytest.raises(ConfigError, match=r"TrainConfig\.batch_size=0 is invalid: expected an int >= 1"):
        TrainConfig.from_dict({"batch_size": "0"})


# ------------------------------------------------------------------ ints, bools, choices
@pytest.mark.parametrize("value", [2.5, 8.0, True])
@pytest.mark.parametrize("field", INTS)
def test_int_fields_refuse_floats_and_bools(field, value):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**{field: value, **({"output_dir": "out"} if field == "save_every" else {})})
    what = "True/False" if value is True else "float"
    assert f"TrainConfig.{field}={value!r} is invalid: expected an int, not {what}" in str(caught.value)


@pytest.mark.parametrize("field", FLOATS)
def test_float_fields_refuse_bools(field):
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{field}=True is invalid: expected a number, not bool"):
        TrainConfig(**{field: True})


@pytest.mark.parametrize("value", [1, 0, "yes", "false", None])
def test_progress_must_be_a_real_bool(value):
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict({"progress": value})
    assert f"TrainConfig.progress={value!r} is invalid: expected True or False" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("lr_schedule", "cosine", "valid are ['linear', 'constant']"),
     ("lr_schedule", "Linear", "Did you mean 'linear'?"),
     ("mixed_precision", "fp8", "valid are ['no', 'fp16', 'bf16']"),
     ("mixed_precision", None, "valid are ['no', 'fp16', 'bf16']"),
     ("lr_schedule", 1, "valid are ['linear', 'constant']")],
)  # fmt: skip
def test_choice_fields_name_the_choices(field, value, expected):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**{field: value})
    assert f"invalid TrainConfig.{field}={value!r}" in str(caught.value) and expected in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [({"output_dir": 3}, "TrainConfig.output_dir=3 is invalid: expected None or a folder path"),
     ({"output_dir": ""}, "TrainConfig.output_dir='' is invalid: expected None or a non-empty folder path"),
     ({"label_key": 0}, "TrainConfig.label_key=0 is invalid: expected the examples' label field name"),
     ({"label_key": ""}, "TrainConfig.label_key='' is invalid")],
)  # fmt: skip
def test_path_and_key_fields(changes, expected):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**changes)
    assert expected in str(caught.value)


def test_output_dir_accepts_a_path_and_stores_a_str(tmp_path):
    config = TrainConfig(output_dir=tmp_path, save_every=2)
    assert config.output_dir == str(tmp_path) and TrainConfig.from_dict(config.to_dict()) == config


def test_config_errors_are_value_errors():
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(learning_rate=math.inf)


# ------------------------------------------------------------------ learning_rate: None is "the strategy's default"
def test_learning_rate_defaults_to_none_and_resolves_to_the_old_default():
    config = TrainConfig()
    assert config.learning_rate is None and config.resolved_learning_rate == DEFAULT_LEARNING_RATE == 1e-5
    assert TrainConfig(learning_rate=3e-4).resolved_learning_rate == 3e-4
    assert TrainConfig.from_dict({"learning_rate": None}).learning_rate is None


@pytest.mark.parametrize(
    ("config", "expected"),
    [(None, 3e-2), ({}, 3e-2), ({"max_steps": 5}, 3e-2), ({"learning_rate": 0.3}, 0.3),
     ({"learning_rate": None}, 3e-2), ({"learning_rate": "1e-1"}, 0.1), (TrainConfig(max_steps=5), 3e-2),
     (TrainConfig(learning_rate=0.3), 0.3)],
)  # fmt: skip
def test_coerce_fills_the_strategy_default_rate(config, expected):
    coerced = TrainConfig.coerce(config, learning_rate=3e-2)
    assert coerced.learning_rate == expected


@pytest.mark.parametrize("config", [[1], "max_steps=5", 3])
def test_coerce_refuses_what_is_neither_a_mapping_nor_a_config(config):
    with pytest.raises(ConfigError) as caught:
        TrainConfig.coerce(config, learning_rate=3e-2)
    message = str(caught.value)
    assert message.startswith("TrainConfig settings must be a mapping or a TrainConfig") and repr(config) in message


def test_coerce_copies_a_config_instead_of_changing_it():
    given = TrainConfig(max_steps=5)
    coerced = TrainConfig.coerce(given, learning_rate=3e-2)
    assert given.learning_rate is None and coerced == dataclasses.replace(given, learning_rate=3e-2)
    explicit = TrainConfig(learning_rate=0.3)
    assert TrainConfig.coerce(explicit, learning_rate=3e-2) is explicit
    assert TrainConfig.coerce(given) is given  # no strategy default: train() resolves it


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: a second thread only costs when other jobs share the cores
    yield
    torch.set_num_threads(threads)


def test_train_with_learning_rate_none_uses_the_default_rate(tiny_causal, bpe_tokenizer, one_thread):
    def run(rate):
        model = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)
        model.backbone.get_input_embeddings().requires_grad_(False)
        train(model, KEYWORD[::2], TrainConfig(learning_rate=rate, batch_size=4, max_steps=2, progress=False))
        return trainable_state(model)

    default, explicit, other = run(None), run(1e-5), run(1e-3)
    assert all(torch.equal(default[k], explicit[k]) for k in default)
    assert not all(torch.equal(default[k], other[k]) for k in default)
