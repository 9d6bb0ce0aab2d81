"""Reduced-precision inference: int8 weights for the LM body's linear layers.

``PromptModel.from_pretrained(..., quantize="int8")`` stores every ``nn.Linear`` weight of the
LM body as int8 with one float scale per output row (symmetric, round to nearest) and runs
the layer in float: the weight is dequantized right before its matrix product. Where the
output projection is tied to the input embeddings (most small LMs), that one vocabulary
table is stored in int8 too: lookups dequantize the rows they read, and the head (run only
at the scored positions, :func:`promptkit.scoring.head_only_at`) dequantizes 4,096
vocabulary rows at a time. Weight memory drops to about a quarter of float32's.

Why weights only: dynamic int8 quantization (``torch.ao``'s ``quantize_dynamic``, int8
activations too) was measured first. On ``smollm2-135m`` it cost 25 points of SST-2 accuracy
(the activations of small LMs have outlier channels a per-tensor int8 scale cannot hold), and
without VNNI instructions it was not faster than float32 either (``benchmarks/speed.py``).

For inference: an int8 layer has no trainable weight, and a quantized model is not saved
(save the float model and quantize when loading). Loading from a local folder quantizes
each layer as it is read (:mod:`promptkit.cast_loading`), so the float32 body is never held
whole. ``dtype="bfloat16"`` is the other reduced-precision mode.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from promptkit.errors import ConfigError, check_choice

QUANTIZE_MODES = ("int8",)
_SCRATCH = threading.local()  # per thread: one float buffer per int8 weight shape (Int8Linear.dequantized)


def int8_rows(weight: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """``(int8 [R, C], float32 scale [R])`` with ``weight ~= int8 * scale[:, None]`` (symmetric, per row).

    Works ``chunk`` rows at a time, so a vocabulary table needs no float temporary of its size.
    """
    weight = weight.detach()
    scale = weight.abs().amax(1).float().clamp(min=1e-12) / 127.0
    out = torch.empty(weight.shape, dtype=torch.int8)
    for i in range(0, weight.size(0), chunk):
        out[i : i + chunk] = torch.round(weight[i : i + chunk].float() / scale[i : i + chunk, None]).to(torch.int8)
    return out, scale


def dequantize(rows: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``rows * scale[:, None]`` in ``dtype``, written into this thread's scratch buffer for the shape.

    The result is valid until the next call for that shape: each layer uses it for one matrix
    product right away, so a forward pass allocates no weight-sized temporaries.
    """
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = (tuple(rows.shape), dtype, rows.device, torch.is_inference_mode_enabled())  # inference tensors stay apart
    if key not in buffers:
        buffers[key] = torch.empty(key[0], dtype=dtype, device=key[2])
    return torch.mul(rows, scale[:, None].to(dtype), out=buffers[key])


class Int8Linear(torch.nn.Module):
    """A linear layer with int8 weights and one float32 scale per output row, computed in float."""

    def __init__(self, rows: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight_int8", rows)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.out_features, self.in_features = rows.shape

    @classmethod
    def from_float(cls, layer: torch.nn.Linear) -> Int8Linear:
        return cls(*int8_rows(layer.weight), layer.bias)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """``[out, in]`` the float weight this layer computes with (:func:`dequantize`)."""
        return dequantize(self.weight_int8, self.scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Embedding(torch.nn.Module):
    """A vocabulary table with int8 rows and one float32 scale per row; lookups come out in float32."""

    def __init__(self, rows: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight_int8", rows)
        self.register_buffer("scale", scale)
        self.num_embeddings, self.embedding_dim = rows.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight_int8[ids].float() * self.scale[ids].unsqueeze(-1)


class Int8TiedHead(torch.nn.Module):
    """The output projection tied to an :class:`Int8Embedding`, dequantized ``chunk`` vocabulary rows at a time."""

    def __init__(self, table: Int8Embedding, bias: torch.Tensor | None = None, chunk: int = 4096) -> None:
        super().__init__()
        self.table, self.chunk = table, chunk
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        rows, scale = self.table.weight_int8, self.table.scale
        logits = hidden.new_empty(*hidden.shape[:-1], rows.size(0))
        for i in range(0, rows.size(0), self.chunk):
            piece = dequantize(rows[i : i + self.chunk], scale[i : i + self.chunk], hidden.dtype)
            torch.matmul(hidden, piece.T, out=logits[..., i : i + piece.size(0)])
        return logits if self.bias is None else logits + self.bias.to(logits.dtype)


def module_name(backbone: torch.nn.Module, target: torch.nn.Module) -> str:
    """The dotted name of ``target`` inside ``backbone``."""
    return next(name for name, module in backbone.named_modules() if module is target)


def tied_vocabulary(backbone: torch.nn.Module) -> tuple[str, str] | None:
    """``(input table name, output head name)`` where the head shares the input embedding's weight, else None."""
    table, head = backbone.get_input_embeddings(), backbone.get_output_embeddings()
    if type(table) is not torch.nn.Embedding or type(head) is not torch.nn.Linear or head.weight is not table.weight:
        return None
    return module_name(backbone, table), module_name(backbone, head)


def quantize_vocabulary(
    backbone: torch.nn.Module, names: tuple[str, str], table: tuple[torch.Tensor, torch.Tensor] | None = None
) -> None:
    """Replace the tied input table and output head ``names`` by one int8 table (:class:`Int8TiedHead` reads it).

    ``table`` is the ``(int8 rows, scales)`` if already quantized, else the float table is.
    """
    head = backbone.get_submodule(names[1])
    quantized = Int8Embedding(*(table or int8_rows(backbone.get_submodule(names[0]).weight)))
    backbone.set_submodule(names[0], quantized)
    backbone.set_submodule(names[1], Int8TiedHead(quantized, head.bias))


def body_linears(backbone: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Linear]]:
    """``(name, layer)`` of every float ``nn.Linear`` of ``backbone`` except its output projection."""
    head = backbone.get_output_embeddings()
    for name, module in backbone.named_modules():
        if type(module) is torch.nn.Linear and module is not head:
            yield name, module


def quantize(backbone: torch.nn.Module, mode: str) -> torch.nn.Module:
    """Replace ``backbone``'s body linear layers with :class:`Int8Linear` in place (``mode="int8"``).

    Raises:
        ConfigError: an unknown mode, or a backbone that is not in float32 (quantize the float model).
    """
    check_choice("quantize", mode, QUANTIZE_MODES)
    if backbone.dtype != torch.float32:
        raise ConfigError(
            f"quantize={mode!r} needs a float32 backbone, got {backbone.dtype}; load it without dtype= "
            "(int8 replaces float32 linear layers)"
        )
    vocabulary = tied_vocabulary(backbone)
    for name, layer in list(body_linears(backbone)):
        backbone.set_submodule(name, Int8Linear.from_float(layer))
    if vocabulary is not None:
        quantize_vocabulary(backbone, vocabulary)
    return backbone


def is_quantized(backbone: torch.nn.Module) -> bool:
    """Whether any layer of ``backbone`` is an :class:`Int8Linear` or :class:`Int8Embedding`."""
    return any(isinstance(module, (Int8Linear, Int8Embedding)) for module in backbone.modules())
