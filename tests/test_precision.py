"""Reduced precision for CPU inference: int8 weights (in place and streamed from a folder) and bfloat16 loading."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from promptkit import BackboneError, ConfigError, PromptModel, SavedModelError, Template, Verbalizer
from promptkit.backbones import load_backbone
from promptkit.precision import Int8Embedding, Int8Linear, Int8TiedHead, int8_rows, is_quantized, quantize

TEMPLATE = Template("Review: {{ text }} It was {{ mask }}")
WORDS = Verbalizer({0: ["terrible"], 1: ["great"]})
ROWS = [{"text": "a charming journey."}, {"text": "bleak, slow and desperate"}, {"text": "fine"}]


def test_int8_rows_round_to_the_nearest_step_of_each_rows_scale():
    weight = torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0], [-254.0, 127.0, 1.0]])
    rows, scale = int8_rows(weight, chunk=2)  # chunks must not change anything
    assert rows.dtype == torch.int8
    torch.testing.assert_close(scale, torch.tensor([1 / 127, 1e-12 / 127, 2.0]))
    assert rows[0].tolist() == [127, -64, 32]  # -63.5 and 31.75 round to the nearest even / nearest
    assert rows[1].tolist() == [0, 0, 0] and rows[2].tolist() == [-127, 64, 0]
    assert ((rows.float() * scale[:, None] - weight).abs() <= scale[:, None] / 2 + 1e-6).all()


def test_the_tied_head_dequantizes_in_chunks_and_equals_the_dense_product():
    table = Int8Embedding(*int8_rows(torch.randn(1000, 8, generator=torch.Generator().manual_seed(0))))
    hidden = torch.randn(3, 2, 8)
    dense = hidden @ (table.weight_int8.float() * table.scale[:, None]).T
    torch.testing.assert_close(Int8TiedHead(table, chunk=300)(hidden), dense)
    ids = torch.tensor([[5, 999]])
    torch.testing.assert_close(table(ids), table.weight_int8[ids].float() * table.scale[ids, None])


def test_int8_replaces_the_body_linears_and_the_tied_vocabulary(tiny_causal, bpe_tokenizer):
    backbone = quantize(copy.deepcopy(tiny_causal), "int8")
    assert is_quantized(backbone) and not is_quantized(tiny_causal)
    layer = backbone.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, Int8Linear) and isinstance(layer.mlp.down_proj, Int8Linear)
    assert isinstance(backbone.model.embed_tokens, Int8Embedding)
    assert isinstance(backbone.lm_head, Int8TiedHead) and backbone.lm_head.table is backbone.model.embed_tokens
    model = PromptModel(backbone, bpe_tokenizer, TEMPLATE, WORDS)
    reference = PromptModel(tiny_causal, bpe_tokenizer, TEMPLATE, WORDS)
    got, want = model.predict_proba(ROWS), reference.predict_proba(ROWS)
    assert got.shape == want.shape and np.allclose(got.sum(1), 1.0)
    np.testing.assert_allclose(got, want, atol=0.02)  # weight rounding only: close, not equal


def test_loading_int8_from_a_folder_quantizes_as_it_reads_and_equals_quantizing_in_place(
    tiny_causal, bpe_tokenizer, tmp_path
):
    tiny_causal.save_pretrained(tmp_path, safe_serialization=True)
    bpe_tokenizer.save_pretrained(tmp_path)
    streamed, _, _ = load_backbone(str(tmp_path), quantize="int8")
    in_place = quantize(copy.deepcopy(tiny_causal), "int8")
    got, want = dict(streamed.named_buffers()), dict(in_place.named_buffers())
    quantized = [k for k in want if k.endswith(("weight_int8", "scale"))]
    assert len(quantized) == 2 * (2 * 7 + 1)  # 7 linears per layer, 2 layers, and the vocabulary table
    assert all(torch.equal(got[k], want[k]) for k in quantized)
    ids = torch.tensor([[1, 50, 900, 7]])
    with torch.no_grad():
        torch.testing.assert_close(streamed(input_ids=ids).logits, in_place(input_ids=ids).logits)
    with pytest.raises(ConfigError, match="int8 weights are computed in float32"):
        load_backbone(str(tmp_path), quantize="int8", dtype="bfloat16")


def test_bfloat16_loading_from_a_folder_equals_transformers_loader(tiny_causal, bpe_tokenizer, tmp_path):
    tiny_causal.save_pretrained(tmp_path, safe_serialization=True)
    bpe_tokenizer.save_pretrained(tmp_path)
    ours, _, _ = load_backbone(str(tmp_path), dtype="bfloat16")
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    mine, ref = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == ref.keys()
    assert all(mine[k].dtype == ref[k].dtype and torch.equal(mine[k], ref[k]) for k in ref)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    ids = torch.tensor([[1, 50, 900, 7]])
    with torch.no_grad():
        assert torch.equal(ours(input_ids=ids).logits, theirs(input_ids=ids).logits)


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
    assert is_quantized(int8.backbone) and isinstance(int8.backbone.lm_head, Int8TiedHead)
    bf16 = PromptModel.from_pretrained(smollm2_dir, template=TEMPLATE, verbalizer=WORDS, dtype="bfloat16")
    assert bf16.backbone.dtype == torch.bfloat16
    fp32 = PromptModel.from_pretrained(smollm2_dir, template=TEMPLATE, verbalizer=WORDS)
    want = fp32.predict_proba(ROWS)
    np.testing.assert_allclose(bf16.predict_proba(ROWS), want, atol=0.05)
    np.testing.assert_allclose(int8.predict_proba(ROWS), want, atol=0.05)
    with pytest.raises(ConfigError, match="quantize"):
        PromptModel.from_pretrained(smollm2_dir, template=TEMPLATE, verbalizer=WORDS, quantize="int4")


@pytest.mark.parametrize("options", [{"dtype": "bfloat16"}, {"quantize": "int8"}])
def test_a_damaged_weights_file_is_refused_by_the_slice_loader(options, tiny_causal, bpe_tokenizer, tmp_path):
    tiny_causal.save_pretrained(tmp_path, safe_serialization=True)
    bpe_tokenizer.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut in half
    with pytest.raises(BackboneError, match="cannot load the weights"):
        load_backbone(str(tmp_path), **options)
