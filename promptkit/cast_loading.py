"""Load a safetensors checkpoint into a lower-precision model without holding the float32 file.

``from_pretrained(folder, dtype=torch.bfloat16)`` memory-maps the checkpoint and touches every
page of it while casting, so for a float32 file the process peaks at the float32 weights
*plus* the bfloat16 copy (``smollm2-135m``: about 540 + 270 MB). Here the model is built
directly in the target dtype (no random initialisation) and filled in slices of at most
``slice_bytes``; each slice is read through a memory map that is closed right after, so the
pages leave the process and the peak is the target-dtype model plus one slice.

It applies when the files' tensor names are exactly the model's own (the dense folders
promptkit writes, and checkpoints saved by ``save_pretrained``); :func:`load_cast` returns
None otherwise and the caller falls back to transformers' loader.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import PretrainedConfig
from transformers.initialization import no_init_weights

from promptkit.memory import release_freed_memory
from promptkit.precision import Int8Linear, body_linears, int8_rows, quantize_vocabulary, tied_vocabulary

SLICE_BYTES = 16 << 20


def _names(files: list[Path]) -> dict[str, Path]:
    names: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            names.update(dict.fromkeys(handle.keys(), file))
    return names


def _row_slices(file: Path, name: str, shape: torch.Size, slice_bytes: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(rows, tensor)``: tensor ``name`` of ``file`` read ``slice_bytes`` at most at a time, each slice
    through a memory map closed right after (closing unmaps the pages just read)."""
    step = max(1, slice_bytes // (8 * max(1, math.prod(shape[1:]))))  # rows per slice (8: the widest file dtype)
    for start in range(0, shape[0], step):
        with safe_open(str(file), framework="pt") as handle:
            yield slice(start, start + step), handle.get_slice(name)[start : start + step]


def _fill(param: torch.Tensor, file: Path, name: str, slice_bytes: int) -> None:
    """Copy tensor ``name`` of ``file`` into ``param`` (casting), at most ``slice_bytes`` of the file at a time."""
    with safe_open(str(file), framework="pt") as handle:
        shape = handle.get_slice(name).get_shape()
    if list(shape) != list(param.shape):
        raise ValueError(f"{name}: the file holds shape {list(shape)}, the model {list(param.shape)}")
    if not shape:
        with safe_open(str(file), framework="pt") as handle:
            param.copy_(handle.get_tensor(name))
        return
    for rows, part in _row_slices(file, name, param.shape, slice_bytes):
        param[rows].copy_(part)


def load_cast(
    auto_class,
    folder: str | Path,
    config: PretrainedConfig,
    dtype: torch.dtype,
    quantize: str | None = None,
    slice_bytes: int = SLICE_BYTES,
) -> torch.nn.Module | None:
    """``auto_class`` model of ``config`` in ``dtype`` with the weights of ``folder``'s safetensors files.

    With ``quantize="int8"`` each body linear layer becomes an :class:`~promptkit.precision.Int8Linear`
    as soon as it is read, so only one float layer is held at a time.
    Returns None where the files are not one-to-one with the model's parameters and buffers
    (tied weights aside), so transformers' own loader (which renames legacy keys) must run.
    """
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    with no_init_weights():  # parameters are allocated, not written: their pages stay out of memory until read
        model = auto_class.from_config(config, dtype=dtype)
    if getattr(model, "_keep_in_fp32_modules", None):  # transformers keeps those in float32 when it loads
        return None
    model.tie_weights()
    names = _names(files)
    state = model.state_dict()
    tied = {n for n, t in state.items() for m, u in state.items() if m != n and t.data_ptr() == u.data_ptr()}
    if set(names) - set(state) or set(state) - set(names) - tied:
        return None
    with torch.no_grad():
        if quantize is not None:
            _read_quantized(model, state, names, tied, slice_bytes)
        for name in list(state):
            tensor = state.pop(name)
            if name in names:  # else tied to a tensor filled under its other name
                _fill(tensor, names[name], name, slice_bytes)
    if quantize is None:
        model.tie_weights()
    release_freed_memory()
    return model.eval()


def _read_int8(file: Path, name: str, shape: torch.Size, slice_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensor ``name`` of ``file`` quantized to ``(int8 rows, scales)`` slice by slice (no float copy of it)."""
    rows, scales = torch.empty(shape, dtype=torch.int8), torch.empty(shape[0])
    for part, values in _row_slices(file, name, shape, slice_bytes):
        rows[part], scales[part] = int8_rows(values)
    release_freed_memory()
    return rows, scales


def _read_quantized(model, state: dict, names: dict[str, Path], tied: set[str], slice_bytes: int) -> None:
    """Read the tied vocabulary table, then the body's linear layers, straight into their int8 forms
    (:mod:`promptkit.precision`); the float parameters they replace are never written, so they never
    take memory. What is read is dropped from ``state``."""
    vocabulary = tied_vocabulary(model)
    if vocabulary is not None:
        keys = [f"{name}.{part}" for name in vocabulary for part in ("weight", "bias") if f"{name}.{part}" in state]
        key = next(k for k in keys if k.endswith(".weight") and k in names)
        table = _read_int8(names[key], key, state[key].shape, slice_bytes)
        bias = f"{vocabulary[1]}.bias"
        if bias in state and bias in names:
            _fill(state[bias], names[bias], bias, slice_bytes)
        for k in keys:
            state.pop(k)
        quantize_vocabulary(model, vocabulary, table)
    for module_name in [name for name, _ in body_linears(model)]:
        layer = model.get_submodule(module_name)
        weight, bias = f"{module_name}.weight", f"{module_name}.bias"
        if weight in tied or weight not in names or (layer.bias is not None and bias not in names):
            continue  # shared with another module: stays float
        if layer.bias is not None:
            _fill(state[bias], names[bias], bias, slice_bytes)
        quantized = Int8Linear(*_read_int8(names[weight], weight, layer.weight.shape, slice_bytes), layer.bias)
        model.set_submodule(module_name, quantized)
        state.pop(weight)
        state.pop(bias, None)
