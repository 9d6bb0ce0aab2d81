"""Shared fixtures: real tokenizers, tiny random-init models built from configs, real backbones."""

from __future__ import annotations

import os

# The suite never downloads: with `datasets` installed and a network, a test without local data would
# otherwise fetch it from the hub (promptkit.data); offline it is skipped (see the hook below). Set before
# huggingface_hub is imported (it reads these once), so a hub name in a test fails at once, not after timeouts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

from promptkit.backbones import resolve  # noqa: E402
from promptkit.data import DataUnavailableError  # noqa: E402

torch.set_num_threads(2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that needs benchmark data no source has (a fresh clone, offline) is skipped, not failed."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.excinfo is not None and call.excinfo.errisinstance(DataUnavailableError):
        first = str(call.excinfo.value).split(" Looked for it:")[0]
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: benchmark data not available: {first}")


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
