"""Shared fixtures: real tokenizers, tiny random-init models built from configs, real backbones."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

from promptkit.backbones import resolve

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """Folder of the offline default backbone (dense safetensors cache, made on first use)."""
    return resolve("smollm2-135m")[0]


@pytest.fixture(scope="session")
def splade_dir() -> str:
    return resolve("splade-tiny")[0]


@pytest.fixture(scope="session")
def bpe_tokenizer(smollm2_dir):
    """A real byte-level BPE tokenizer with a chat template (SmolLM2's)."""
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def wordpiece_tokenizer(splade_dir):
    """A real WordPiece tokenizer with a [MASK] token (BERT's vocabulary)."""
    return AutoTokenizer.from_pretrained(splade_dir)


@pytest.fixture(scope="session")
def tiny_causal(bpe_tokenizer):
    """A 2-layer random-init Llama over the real SmolLM2 vocabulary."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(bpe_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_mlm(wordpiece_tokenizer):
    """A 2-layer random-init BERT MLM over the real BERT vocabulary."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(wordpiece_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
    )
    return BertForMaskedLM(config).eval()
