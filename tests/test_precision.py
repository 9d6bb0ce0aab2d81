"""Reduced precision for CPU inference: int8 dynamic quantization and bfloat16 loading."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from promptkit import ConfigError, PromptModel, SavedModelError, Template, Verbalizer
from promptkit.precision import is_quantized, quantize

TEMPLATE = Template("Review: {{ text }} It was {{ mask }}")
WORDS = Verbalizer({0: ["terrible"], 1: ["great"]})
ROWS = [{"text": "a charming journey."}, {"text": "bleak, slow and desperate"}, {"text": "fine"}]


def test_int8_replaces_the_body_linears_and_keeps_the_head_in_float(tiny_causal, bpe_tokenizer):
    backbone = quantize(copy.deepcopy(tiny_causal), "int8")
    assert is_quantized(backbone) and not is_quantized(tiny_causal)
    layer = backbone.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(layer.mlp.down_proj, torch.ao.nn.quantized.dynamic.Linear)
    assert type(backbone.lm_head) is torch.nn.Linear  # tied to the embeddings, run at scored positions only
    model = PromptModel(backbone, bpe_tokenizer, TEMPLATE, WORDS)
    reference = PromptModel(tiny_causal, bpe_tokenizer, TEMPLATE, WORDS)
    got, want = model.predict_proba(ROWS), reference.predict_proba(ROWS)
    assert got.shape == want.shape and np.allclose(got.sum(1), 1.0)
    np.testing.assert_allclose(got, want, atol=0.05)  # int8 rounding: close, not equal


def test_quantized_models_are_not_saved_and_bad_modes_are_refused(tiny_causal, bpe_tokenizer, tmp_path):
    model = PromptModel(quantize(copy.deepcopy(tiny_causal), "int8"), bpe_tokenizer, TEMPLATE, WORDS)
    with pytest.raises(SavedModelError, match="quantize when loading"):
        model.save_pretrained(str(tmp_path / "q"))
    with pytest.raises(ConfigError, match="quantize"):
        quantize(copy.deepcopy(tiny_causal), "int4")
    with pytest.raises(ConfigError, match="needs a float32 backbone"):
        quantize(copy.deepcopy(tiny_causal).to(torch.bfloat16), "int8")


def test_from_pretrained_quantizes_and_loads_bfloat16(smollm2_dir):
    int8 = PromptModel.from_pretrained(smollm2_dir, template=TEMPLATE, verbalizer=WORDS, quantize="int8")
    assert is_quantized(int8.backbone)
    bf16 = PromptModel.from_pretrained(smollm2_dir, template=TEMPLATE, verbalizer=WORDS, dtype="bfloat16")
    assert bf16.backbone.dtype == torch.bfloat16
    fp32 = PromptModel.from_pretrained(smollm2_dir, template=TEMPLATE, verbalizer=WORDS)
    want = fp32.predict_proba(ROWS)
    np.testing.assert_allclose(bf16.predict_proba(ROWS), want, atol=0.05)
    assert int8.predict_proba(ROWS).shape == want.shape
    with pytest.raises(ConfigError, match="quantize"):
        PromptModel.from_pretrained(smollm2_dir, template=TEMPLATE, verbalizer=WORDS, quantize="int4")
