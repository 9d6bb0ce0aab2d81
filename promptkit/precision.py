"""Reduced-precision inference on the CPU: dynamic int8 quantization of a backbone's linear layers.

``PromptModel.from_pretrained(..., quantize="int8")`` replaces every ``nn.Linear`` of the
LM body with a dynamically quantized one (``torch.ao.quantization.quantize_dynamic``):
weights stored as int8 with a per-channel scale, activations quantized on the fly, matrix
products in int8 (fbgemm on x86). The output projection is left in float: promptkit
runs it only at the scored positions (:func:`promptkit.scoring.head_only_at`), so it costs
little, and it is tied to the input embeddings in most small LMs.

It is for inference: quantized layers have no trainable weights, and a quantized model is
not saved (save the float model and quantize when loading). ``dtype="bfloat16"`` is the
other reduced-precision mode; it needs no module here. Which mode is faster depends on the
CPU (bfloat16 matrix units or not); ``benchmarks/speed.py`` measures both against float32.
"""

from __future__ import annotations

import torch

from promptkit.errors import ConfigError, check_choice

QUANTIZE_MODES = ("int8",)


def quantize(backbone: torch.nn.Module, mode: str) -> torch.nn.Module:
    """Quantize ``backbone``'s linear layers in place (``mode="int8"``) and return it.

    Raises:
        ConfigError: an unknown mode, or a backbone that is not in float32 (quantize the float model).
    """
    check_choice("quantize", mode, QUANTIZE_MODES)
    if backbone.dtype != torch.float32:
        raise ConfigError(
            f"quantize={mode!r} needs a float32 backbone, got {backbone.dtype}; load it without dtype= "
            "(int8 replaces float32 linear layers)"
        )
    head = backbone.get_output_embeddings()
    spec = {
        name: torch.ao.quantization.per_channel_dynamic_qconfig
        for name, module in backbone.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }
    torch.ao.quantization.quantize_dynamic(backbone, spec, dtype=torch.qint8, inplace=True)
    return backbone


def is_quantized(backbone: torch.nn.Module) -> bool:
    """Whether any layer of ``backbone`` is a dynamically quantized linear layer."""
    quantized = torch.ao.nn.quantized.dynamic.Linear
    return any(isinstance(module, quantized) for module in backbone.modules())
