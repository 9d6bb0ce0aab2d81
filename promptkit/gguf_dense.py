"""Turn a GGUF checkpoint into a dense transformers folder: safetensors, config, tokenizer.

This replaces ``from_pretrained(..., gguf_file=...)`` for promptkit's offline aliases because
that path re-parses the file's metadata with ``gguf.GGUFReader`` three times (about 20 s each
for Gemma 3's 262k-token vocabulary); it took minutes for ``gemma3-270m``. The result is the
same: the config is built from transformers' own GGUF key table, the weights are dequantized
with the ``gguf`` package's routines (the ones transformers calls) and undergo the same
per-architecture fixes, and the tokenizer is converted by transformers from the file (then
saved in a form that loads faster, see :func:`save_fast_loading`).
``tests/test_gemma.py`` checks the equality against transformers on GGUF files it writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from gguf import MODEL_ARCH_NAMES, get_tensor_name_map
from gguf.quants import dequantize
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig
from transformers.integrations import GGUF_CONFIG_MAPPING
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES, tokenizer_class_from_name

from promptkit.errors import BackboneError
from promptkit.gguf_reader import GGUFFile, read_gguf

# transformers names Gemma 3's text-only model differently from llama.cpp's architecture
_MODEL_TYPE = {"gemma3": "gemma3_text"}


def _unpermute_rope(name: str, weights: np.ndarray, config: PretrainedConfig) -> np.ndarray:
    """Undo llama.cpp's reordering of Llama's query/key rows (it interleaves each head's halves)."""
    if ".attn_q." in name:
        heads = config.num_attention_heads
    elif ".attn_k." in name:
        heads = config.num_key_value_heads
    else:
        return weights
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _unshift_norms(name: str, weights: np.ndarray, config: PretrainedConfig) -> np.ndarray:
    """Gemma's RMSNorm scales by ``1 + w``; llama.cpp stores ``1 + w``, transformers wants ``w``."""
    return weights - 1 if "norm.weight" in name else weights


# what each supported architecture's tensors need after dequantization (as in transformers)
_FIXES: dict[str, Callable[[str, np.ndarray, PretrainedConfig], np.ndarray]] = {
    "llama": _unpermute_rope,
    "gemma3": _unshift_norms,
}


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """Write ``model.safetensors``, ``config.json`` and the tokenizer files of ``gguf_path`` into ``target``."""
    gguf = read_gguf(gguf_path)
    config = gguf_config(gguf)
    save_file(dense_state_dict(gguf, config), str(target / "model.safetensors"))
    config.save_pretrained(target)
    save_fast_loading(gguf_tokenizer(gguf_path, config), target)


def gguf_config(gguf: GGUFFile) -> PretrainedConfig:
    """The transformers config of a GGUF file, from the metadata keys transformers maps."""
    arch = gguf.architecture
    if arch not in _FIXES:
        raise BackboneError(
            f"{gguf.path.name}: GGUF architecture {arch!r} is not supported by promptkit's converter "
            f"(supported: {sorted(_FIXES)}); load it with transformers' from_pretrained(..., gguf_file=...)"
        )
    values = {"tie_word_embeddings": "output.weight" not in gguf.tensors}
    for key, value in gguf.metadata.items():
        prefix, _, field = key.partition(".")
        name = GGUF_CONFIG_MAPPING.get(prefix, {}).get(field)
        if name is not None and name != -1:
            values[name] = value
    values["model_type"] = _MODEL_TYPE.get(arch, arch)
    values.setdefault("vocab_size", len(gguf.metadata["tokenizer.ggml.tokens"]))
    config = AutoConfig.for_model(**values)
    config.dtype = torch.float32
    return config


def dense_state_dict(gguf: GGUFFile, config: PretrainedConfig) -> dict[str, torch.Tensor]:
    """Float32 weights under transformers' names; a tied output layer is stored once, as the embedding.

    Keeping the input embedding's name (not ``lm_head.weight``) lets the folder load as any
    model class of the architecture, e.g. a sequence classifier, with real embeddings.
    """
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    tensor_names = get_tensor_name_map(_model_arch(gguf.architecture), config.num_hidden_layers)
    fix = _FIXES[gguf.architecture]
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    missing = []
    for name, param in model.state_dict(keep_vars=True).items():
        if id(param) in seen:  # tied to a tensor already taken
            continue
        seen.add(id(param))
        module, _, suffix = name.rpartition(".")
        gguf_name = f"{tensor_names.get_name(module)}.{suffix}"
        if gguf_name not in gguf.tensors:
            missing.append(name)
            continue
        tensor = gguf.tensors[gguf_name]
        weights = fix(gguf_name, dequantize(tensor.data, tensor.ggml_type), config)
        out[name] = torch.from_numpy(np.require(weights, np.float32, ["C", "W"]))
    if missing:
        raise BackboneError(
            f"{gguf.path.name} has no tensor for {len(missing)} weight(s) of {type(model).__name__}, e.g. "
            f"{missing[:3]}; the file is damaged or not a {gguf.architecture} checkpoint"
        )
    return out


def gguf_tokenizer(gguf_path: Path, config: PretrainedConfig):
    """The fast tokenizer transformers converts from the file, of the class AutoTokenizer would pick.

    Called on the class directly because ``AutoTokenizer`` with a ``gguf_file`` re-reads the
    config through the slow reader even when given one.
    """
    cls = tokenizer_class_from_name(TOKENIZER_MAPPING_NAMES.get(config.model_type) or "TokenizersBackend")
    return cls.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def save_fast_loading(tokenizer, target: Path) -> None:
    """Save ``tokenizer`` so that ``AutoTokenizer`` loads it quickly, with the same behaviour.

    Loading Gemma 3's 262k-token tokenizer as a ``GemmaTokenizer`` took 4-6 s: that class
    re-parses ``tokenizer.json`` in Python and rebuilds the BPE from its vocabulary and merges,
    and without a list of added tokens in ``tokenizer_config.json`` transformers parses the
    file once more to find them. Saved as the generic ``TokenizersBackend`` with that list, it
    loads in about 2 s. The whole pipeline (normalizer, BPE, the post-processor adding ``<bos>``)
    is in ``tokenizer.json``, so tokenization is unchanged; the class's padding side is kept.
    """
    tokenizer.save_pretrained(target)
    path = target / "tokenizer_config.json"
    settings = json.loads(path.read_text(encoding="utf-8"))
    settings["tokenizer_class"] = "TokenizersBackend"
    settings["padding_side"] = tokenizer.padding_side
    settings["added_tokens_decoder"] = {str(i): t.__getstate__() for i, t in tokenizer.added_tokens_decoder.items()}
    path.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _model_arch(architecture: str):
    return next(arch for arch, name in MODEL_ARCH_NAMES.items() if name == architecture)
