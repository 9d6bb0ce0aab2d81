"""gemma3-270m and promptkit's GGUF converter.

The converter (promptkit.gguf_dense) must give what transformers' own GGUF loader gives:
checked on small GGUF files written here (every quantization type of the real gemma3 file,
Llama's query/key reordering), and on the real file in a slow test. The real backbone then
gets parity tests like smollm2-135m's: PromptModel's label scores equal a plain forward
pass + log-softmax over the label words.
"""

from __future__ import annotations

import json
import os

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from promptkit import BackboneError, PromptModel, Template, Verbalizer
from promptkit.backbones import ALIASES, resolve
from promptkit.gguf_dense import convert_gguf, gguf_config
from promptkit.gguf_reader import read_gguf

Q = gguf.GGMLQuantizationType
HIDDEN, FFN, VOCAB_WORDS = 256, 512, ["▁the", "▁cat", "▁sat", "▁on", "▁mat", "▁你好", "▁世界", "好", "差"]


def _tokens() -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocabulary: control tokens, byte tokens, then words and letters."""
    control = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    words = VOCAB_WORDS + ["▁", *"abcdefghijklmnopqrstuvwxyz"]
    tokens = control + byte_tokens + words
    types = [3, 3, 3, 2, 3] + [6] * len(byte_tokens) + [1] * len(words)
    scores = [0.0] * (len(control) + len(byte_tokens)) + [-float(i) for i in range(len(words))]
    return tokens, scores, types


def _k_quant_blocks(rng: np.random.Generator, qtype: Q, rows: int, cols: int) -> np.ndarray:
    """Random Q4_K / Q6_K blocks with small finite scales (gguf can dequantize these types, not quantize them)."""
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block, block_bytes), dtype=np.uint8)
    scale = np.array([0.002], dtype=np.float16).view(np.uint8)
    if qtype == Q.Q4_K:  # d and dmin come first
        blocks[:, 0:2] = scale
        blocks[:, 2:4] = scale
    else:  # Q6_K: d comes last
        blocks[:, -2:] = scale
    return blocks.reshape(rows, cols // block * block_bytes)


def _write_gguf(path, arch: str, heads: int, kv_heads: int, head_dim: int, layers: int = 2) -> None:
    """A small random checkpoint of ``arch`` with every storage type the real gemma3 file uses."""
    rng = np.random.default_rng(0)
    tokens, scores, types = _tokens()
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.name", f"tiny {arch}")
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    if arch == "gemma3":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_sliding_window(64)
    else:
        writer.add_rope_dimension_count(head_dim)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)

    def dense(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.05, size=shape).astype(np.float32)

    def add(name: str, qtype: Q, rows: int, cols: int) -> None:
        if qtype in (Q.Q4_K, Q.Q6_K):
            writer.add_tensor(name, _k_quant_blocks(rng, qtype, rows, cols), raw_dtype=qtype)
        else:
            writer.add_tensor(name, gguf.quants.quantize(dense(rows, cols), qtype), raw_dtype=qtype)

    add("token_embd.weight", Q.Q8_0, len(tokens), HIDDEN)
    writer.add_tensor("output_norm.weight", 1 + dense(HIDDEN))
    for i in range(layers):
        add(f"blk.{i}.attn_q.weight", Q.Q4_K, heads * head_dim, HIDDEN)
        add(f"blk.{i}.attn_k.weight", Q.Q5_0, kv_heads * head_dim, HIDDEN)
        add(f"blk.{i}.attn_v.weight", Q.Q8_0, kv_heads * head_dim, HIDDEN)
        add(f"blk.{i}.attn_output.weight", Q.Q4_K, HIDDEN, heads * head_dim)
        add(f"blk.{i}.ffn_gate.weight", Q.Q5_0, FFN, HIDDEN)
        add(f"blk.{i}.ffn_up.weight", Q.Q8_0, FFN, HIDDEN)
        add(f"blk.{i}.ffn_down.weight", Q.Q6_K, HIDDEN, FFN)
        norms = ["attn_norm", "ffn_norm"]
        if arch == "gemma3":
            norms += ["post_attention_norm", "post_ffw_norm"]
            writer.add_tensor(f"blk.{i}.attn_q_norm.weight", 1 + dense(head_dim))
            writer.add_tensor(f"blk.{i}.attn_k_norm.weight", 1 + dense(head_dim))
        for norm in norms:
            writer.add_tensor(f"blk.{i}.{norm}.weight", 1 + dense(HIDDEN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _config_dict(model) -> dict:
    """A model's config without where it was loaded from or how the file was quantized."""
    return {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "quantization_config")}


@pytest.mark.parametrize(
    ("arch", "heads", "kv_heads", "head_dim"),
    [("gemma3", 2, 1, 128), ("llama", 4, 2, 64)],  # llama: grouped query/key rows to un-permute
)
def test_converter_matches_transformers_gguf_loader(tmp_path, arch, heads, kv_heads, head_dim):
    _write_gguf(tmp_path / "tiny.gguf", arch, heads, kv_heads, head_dim)
    out = tmp_path / "dense"
    out.mkdir()
    convert_gguf(tmp_path / "tiny.gguf", out)

    reference = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="tiny.gguf")
    ours = AutoModelForCausalLM.from_pretrained(str(out), use_safetensors=True)
    expected = reference.state_dict()
    assert ours.state_dict().keys() == expected.keys()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert ours.config.model_type == reference.config.model_type == ("gemma3_text" if arch == "gemma3" else "llama")
    assert _config_dict(ours) == _config_dict(reference)

    ids = torch.tensor([[2, 262, 265, 267, 270]])
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, reference(ids).logits)
    reference_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="tiny.gguf")
    ours_tok = AutoTokenizer.from_pretrained(str(out))
    texts = ["the cat sat on the mat", "你好世界", "好 差 xyz", "<bos>the<eos>"]
    assert ours_tok(texts).input_ids == reference_tok(texts).input_ids
    assert ours_tok.padding_side == reference_tok.padding_side
    assert ours_tok.added_tokens_decoder == reference_tok.added_tokens_decoder


def test_reader_reads_every_metadata_type(tmp_path):
    path = tmp_path / "values.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint8("t.u8", 255)
    writer.add_int8("t.i8", -7)
    writer.add_uint16("t.u16", 65535)
    writer.add_int16("t.i16", -300)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -5)
    writer.add_float32("t.f32", 0.1)
    writer.add_uint64("t.u64", 2**40)
    writer.add_int64("t.i64", -(2**40))
    writer.add_float64("t.f64", 0.1)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "中文 ok")
    writer.add_array("t.ints", [1, -2, 3])
    writer.add_array("t.floats", [0.5, -1.25])
    writer.add_array("t.strs", ["a", "", "世界"])
    writer.add_tensor("x.weight", np.arange(6, dtype=np.float32).reshape(2, 3))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    parsed = read_gguf(path)
    values = {k[2:]: v for k, v in parsed.metadata.items() if k.startswith("t.")}
    assert values == {
        "u8": 255, "i8": -7, "u16": 65535, "i16": -300, "u32": 4_000_000_000, "i32": -5,
        "f32": pytest.approx(0.1, rel=1e-7), "u64": 2**40, "i64": -(2**40), "f64": 0.1, "bool": True,
        "str": "中文 ok", "ints": [1, -2, 3], "floats": [0.5, -1.25], "strs": ["a", "", "世界"],
    }  # fmt: skip
    tensor = parsed.tensors["x.weight"]
    assert tensor.shape == (2, 3) and tensor.ggml_type == Q.F32
    assert tensor.data.view(np.float32).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_reader_refuses_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(BackboneError, match=r"model.gguf is not a GGUF file: it starts with b'PK\\x03\\x04'"):
        read_gguf(path)


def test_converter_names_an_unsupported_architecture(tmp_path):
    path = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(BackboneError, match=r"architecture 'mamba' is not supported .* \['gemma3', 'llama'\]"):
        gguf_config(read_gguf(path))


# ------------------------------------------------------------------ the real gemma3-270m
@pytest.fixture(scope="module")
def gemma():
    """gemma3-270m with an English review template (the dense cache is made on first use)."""
    return PromptModel.from_pretrained(
        "gemma3-270m",
        template=Template("Review: {{ text }}\nSentiment: {{ mask }}"),
        verbalizer=Verbalizer({0: ["negative"], 1: ["positive"]}),
    )


def _hand_scores(backbone, tokenizer, texts: list[str], words: list[str]) -> np.ndarray:
    """Label probabilities by hand: one forward pass, log-softmax at the last prompt token."""
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in words]
    assert all(len(i) == 1 for i in ids), ids
    rows = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            lp = backbone(**enc, logits_to_keep=1).logits[0, -1].log_softmax(-1)
        rows.append(torch.stack([lp[i[0]] for i in ids]).softmax(-1).numpy())
    return np.stack(rows)


@pytest.mark.real_model
def test_gemma3_is_the_real_checkpoint(gemma):
    backbone, tokenizer = gemma.backbone, gemma.tokenizer
    assert backbone.config.model_type == "gemma3_text" and backbone.num_parameters() == pytest.approx(268.1e6, rel=0.01)
    assert backbone.get_output_embeddings().weight is backbone.get_input_embeddings().weight
    assert tokenizer.is_fast and len(tokenizer) == 262144 and tokenizer.padding_side == "left"
    assert tokenizer.tokenize("今天天气很好") == ["今天", "天气", "很好"]  # whole Chinese words
    facts = {
        "Paris is the capital of France. Berlin is the capital of": " Germany",
        "法国的首都是巴黎。德国的首都是": "柏",
    }
    for prompt, answer in facts.items():  # real weights, read right: the next token is the fact
        enc = tokenizer(prompt, return_tensors="pt")
        assert enc.input_ids[0, 0] == tokenizer.bos_token_id
        with torch.no_grad():
            assert tokenizer.decode(backbone(**enc, logits_to_keep=1).logits[0, -1].argmax()) == answer


@pytest.mark.real_model
def test_gemma3_parity_with_plain_transformers(gemma):
    examples = [{"text": "a gorgeous, witty, seductive movie."}, {"text": "a dull, tedious mess."}]
    texts = [f"Review: {e['text']}\nSentiment:" for e in examples]
    expected = _hand_scores(gemma.backbone, gemma.tokenizer, texts, ["negative", "positive"])
    np.testing.assert_allclose(gemma.predict_proba(examples), expected, atol=1e-5)
    assert expected.argmax(-1).tolist() == [1, 0]


@pytest.mark.real_model
def test_gemma3_chinese_parity_with_plain_transformers(gemma):
    template, verbalizer = Template("评论：{{ text }}\n顾客感到{{ mask }}"), Verbalizer({0: ["失望"], 1: ["满意"]})
    model = PromptModel(gemma.backbone, gemma.tokenizer, template, verbalizer)
    examples = [{"text": "这部电影太好看了，演员演得非常棒。"}, {"text": "剧情无聊，浪费时间。"}]
    ids = [gemma.tokenizer(w, add_special_tokens=False)["input_ids"] for w in ["失望", "满意"]]
    assert all(len(i) == 1 for i in ids), ids
    rows = []
    for example in examples:
        enc = gemma.tokenizer(f"评论：{example['text']}\n顾客感到", return_tensors="pt")
        with torch.no_grad():
            lp = gemma.backbone(**enc, logits_to_keep=1).logits[0, -1].log_softmax(-1)
        rows.append(lp[[i[0] for i in ids]].softmax(-1).numpy())
    np.testing.assert_allclose(model.predict_proba(examples), np.stack(rows), atol=1e-5)


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.skipif(not os.environ.get("PROMPTKIT_SLOW"), reason="slow (minutes): run with `make test-slow`")
def test_gemma3_cache_matches_transformers_on_the_real_file():
    """Same weights, config and tokenization as from_pretrained(gguf_file=...) on the real file."""
    folder, _ = resolve("gemma3-270m")
    spec = ALIASES["gemma3-270m"]
    gguf_dir = os.path.dirname(folder)
    reference = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=spec.path)
    ours = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    expected = reference.state_dict()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert _config_dict(ours) == _config_dict(reference)
    reference_tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=spec.path)
    ours_tok = AutoTokenizer.from_pretrained(folder)
    texts = ["Hello  world!", "今天天气很好，我们去公园吧。", "<start_of_turn>user\n你好<end_of_turn>"]
    assert ours_tok(texts).input_ids == reference_tok(texts).input_ids
    assert json.loads(ours_tok.backend_tokenizer.to_str()) == json.loads(reference_tok.backend_tokenizer.to_str())
