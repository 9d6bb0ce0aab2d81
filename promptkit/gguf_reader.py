"""Read a GGUF file's metadata and tensor table quickly; tensors come back as memory-mapped bytes.

Why not ``gguf.GGUFReader``: it builds numpy views for every element of every metadata array,
which takes about 20 s for Gemma 3's 262,144-entry vocabulary (three arrays of that length),
and transformers' GGUF loader constructs it three times per conversion. Here numeric arrays
are decoded in one numpy call and string arrays are walked with ``struct`` over an ``mmap``,
so the same metadata parses in well under a second. Layout: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from promptkit.errors import BackboneError

_SCALARS = {  # GGUF value type -> (struct format, numpy dtype)
    0: ("<B", np.uint8),
    1: ("<b", np.int8),
    2: ("<H", np.uint16),
    3: ("<h", np.int16),
    4: ("<I", np.uint32),
    5: ("<i", np.int32),
    6: ("<f", np.float32),
    7: ("<?", np.bool_),
    10: ("<Q", np.uint64),
    11: ("<q", np.int64),
    12: ("<d", np.float64),
}
_STRING, _ARRAY = 8, 9
_VERSIONS = (2, 3)  # v1 counted with 32-bit integers and is long gone
_DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file, not yet read.

    Attributes:
        name: the GGUF name, e.g. ``"blk.0.attn_q.weight"``.
        ggml_type: how it is stored (F32, Q8_0, Q4_K, ...).
        shape: in torch order (slowest-moving dimension first).
        data: the stored bytes as a read-only ``uint8`` view of shape ``(*shape[:-1], bytes per
            row)``, the layout ``gguf.quants.dequantize`` takes.
    """

    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True)
class GGUFFile:
    """A GGUF file's metadata (``{key: value}``; arrays as lists) and its tensors by name."""

    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]

    @property
    def architecture(self) -> str:
        return self.metadata["general.architecture"]


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse ``path``'s header, metadata and tensor table; tensor bytes stay on disk (mmap)."""
    path = Path(path)
    with path.open("rb") as handle:
        blob = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    cursor = _Cursor(blob, path)
    if blob[:4] != b"GGUF":
        raise BackboneError(f"{path} is not a GGUF file: it starts with {blob[:4]!r}, not b'GGUF'")
    cursor.pos = 4
    version = cursor.scalar(4)
    if version not in _VERSIONS:
        raise BackboneError(
            f"{path} is GGUF version {version}; promptkit reads versions {_VERSIONS} (little-endian). "
            "Re-export the model with a current llama.cpp"
        )
    tensor_count, kv_count = cursor.scalar(10), cursor.scalar(10)
    metadata = {}
    for _ in range(kv_count):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.scalar(4))
    table = [_tensor_entry(cursor) for _ in range(tensor_count)]
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    data_start = -(-cursor.pos // alignment) * alignment
    tensors = {name: _tensor(blob, path, name, dims, kind, data_start + offset) for name, dims, kind, offset in table}
    return GGUFFile(path, metadata, tensors)


class _Cursor:
    """A read position in the mapped file, with the GGUF value decoders."""

    def __init__(self, blob: mmap.mmap, path: Path):
        self.blob, self.path, self.pos = blob, path, 0

    def scalar(self, kind: int) -> Any:
        fmt, dtype = _SCALARS[kind]
        (value,) = struct.unpack_from(fmt, self.blob, self.pos)
        self.pos += np.dtype(dtype).itemsize
        return value

    def string(self) -> str:
        (length,) = struct.unpack_from("<Q", self.blob, self.pos)
        start = self.pos + 8
        self.pos = start + length
        return self.blob[start : self.pos].decode("utf-8")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(kind)
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise BackboneError(f"{self.path}: metadata value type {kind} at byte {self.pos} is not a GGUF type")
        item_kind, count = struct.unpack_from("<IQ", self.blob, self.pos)
        self.pos += 12
        if item_kind in _SCALARS:
            dtype = np.dtype(_SCALARS[item_kind][1]).newbyteorder("<")
            items = np.frombuffer(self.blob, dtype=dtype, count=count, offset=self.pos)
            self.pos += items.nbytes
            return items.tolist()
        return [self.value(item_kind) for _ in range(count)]


def _tensor_entry(cursor: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
    name = cursor.string()
    n_dims = cursor.scalar(4)
    dims = struct.unpack_from(f"<{n_dims}Q", cursor.blob, cursor.pos)
    cursor.pos += 8 * n_dims
    kind, offset = cursor.scalar(4), cursor.scalar(10)
    return name, tuple(reversed(dims)), kind, offset  # GGUF lists the fastest-moving dimension first


def _tensor(blob: mmap.mmap, path: Path, name: str, shape: tuple[int, ...], kind: int, start: int) -> GGUFTensor:
    try:
        ggml_type = GGMLQuantizationType(kind)
        block, block_bytes = GGML_QUANT_SIZES[ggml_type]
    except (ValueError, KeyError):
        known = "the installed gguf package does not know"
        raise BackboneError(f"{path}: tensor {name!r} has ggml type {kind}, which {known}; upgrade gguf") from None
    if shape[-1] % block:
        raise BackboneError(f"{path}: tensor {name!r} rows of {shape[-1]} do not fill whole {ggml_type.name} blocks")
    row_bytes = shape[-1] // block * block_bytes
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    data = np.frombuffer(blob, dtype=np.uint8, count=rows * row_bytes, offset=start)
    return GGUFTensor(name, ggml_type, shape, data.reshape(*shape[:-1], row_bytes))
