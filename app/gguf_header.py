"""Read a GGUF file's header — its metadata and tensor table — without touching the weights.

gguf-py's GGUFReader builds a numpy view for every element of every array, which takes seconds for
a 262k-token vocabulary. This reader walks string arrays by their length prefixes instead, and
decodes only scalars, strings and numeric arrays: everything Lantern asks of a model.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf
from gguf import GGMLQuantizationType, GGUFValueType

from app.errors import ModelValidationError

# magic (4 bytes), version (u32), tensor count (u64), metadata count (u64); little-endian as written
_HEADER = struct.Struct("<IIQQ")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}


@dataclass(frozen=True)
class UndecodedArray:
    """An array of strings or of arrays (the vocabulary, the merges): walked over, never decoded."""

    item_type: GGUFValueType
    length: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    tensor_type: GGMLQuantizationType
    shape: tuple[int, ...]  # in GGUF order: the fastest-varying dimension first
    data_offset: int  # from the start of the file

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int:
        block_size, type_size = gguf.GGML_QUANT_SIZES[self.tensor_type]
        return self.n_elements * type_size // block_size


@dataclass(frozen=True)
class GGUFHeader:
    """A GGUF file's metadata and tensor table. Values are Python scalars, strings, lists of numbers,
    or UndecodedArray for arrays of strings."""

    version: int
    fields: dict[str, object]
    tensors: tuple[TensorInfo, ...]
    file_size: int

    def get(self, key: str) -> object | None:
        return self.fields.get(key)


class _PastEnd(Exception):
    pass


def read_gguf_header(path: Path) -> GGUFHeader:
    """Read the header of an existing file; raise ModelValidationError with a one-line reason."""
    size = path.stat().st_size
    if size == 0:
        raise ModelValidationError(f"{path} is an empty file, not a GGUF model")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        _check_start(path, buf)
        try:
            return _parse(buf)
        except (_PastEnd, struct.error):
            raise ModelValidationError(
                f"{path} is truncated or corrupt: its header runs past the end of the file ({size} bytes)"
            ) from None
        except (ValueError, OverflowError, UnicodeDecodeError) as exc:
            raise ModelValidationError(f"{path} is truncated or corrupt: {exc}") from None


def _check_start(path: Path, buf: mmap.mmap) -> None:
    if len(buf) >= 4 and buf[:4] != b"GGUF":
        raise ModelValidationError(f"{path} is not a GGUF file (magic {buf[:4]!r}, expected b'GGUF')")
    if len(buf) < _HEADER.size:
        raise ModelValidationError(f"{path} is truncated: {len(buf)} bytes is shorter than a GGUF header")
    _, version, _, _ = _HEADER.unpack_from(buf)
    if version not in gguf.READER_SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, gguf.READER_SUPPORTED_VERSIONS))
        raise ModelValidationError(f"{path} is GGUF version {version}; Lantern reads versions {supported}")


def _parse(buf: mmap.mmap) -> GGUFHeader:
    _, version, tensor_count, kv_count = _HEADER.unpack_from(buf)
    offset = _HEADER.size
    fields: dict[str, object] = {}
    for _ in range(kv_count):
        key, offset = _string(buf, offset)
        (value_type,) = _U32.unpack_from(buf, offset)
        value_type = GGUFValueType(value_type)
        if key in fields:
            raise ValueError(f"the key {key} appears twice")
        if key == gguf.Keys.General.ALIGNMENT and value_type != GGUFValueType.UINT32:
            raise ValueError(f"{key} is {value_type.name}, not UINT32")
        fields[key], offset = _value(buf, offset + 4, value_type)

    tensor_table: list[tuple[str, GGMLQuantizationType, tuple[int, ...], int]] = []
    for _ in range(tensor_count):
        name, offset = _string(buf, offset)
        (n_dims,) = _U32.unpack_from(buf, offset)
        shape = struct.unpack_from(f"<{n_dims}Q", buf, offset + 4)
        offset += 4 + 8 * n_dims
        raw_type, relative = struct.unpack_from("<IQ", buf, offset)
        offset += 12
        tensor_table.append((name, GGMLQuantizationType(raw_type), shape, relative))

    alignment = fields.get(gguf.Keys.General.ALIGNMENT, gguf.GGUF_DEFAULT_ALIGNMENT)
    if alignment == 0 or alignment & (alignment - 1):
        raise ValueError(f"{gguf.Keys.General.ALIGNMENT} is {alignment}, not a power of two")
    data_start = -(-offset // alignment) * alignment
    tensors = tuple(TensorInfo(n, t, s, data_start + rel) for n, t, s, rel in tensor_table)
    if len({t.name for t in tensors}) != len(tensors):
        raise ValueError("two tensors have the same name")
    return GGUFHeader(version, fields, tensors, len(buf))


def _string(buf: mmap.mmap, offset: int) -> tuple[str, int]:
    (length,) = _U64.unpack_from(buf, offset)
    end = offset + 8 + length
    if end > len(buf):
        raise _PastEnd
    return str(buf[offset + 8 : end], "utf-8"), end


def _value(buf: mmap.mmap, offset: int, value_type: GGUFValueType) -> tuple[object, int]:
    if value_type == GGUFValueType.STRING:
        return _string(buf, offset)
    if value_type in _SCALAR_FORMATS:
        scalar = struct.Struct("<" + _SCALAR_FORMATS[value_type])
        return scalar.unpack_from(buf, offset)[0], offset + scalar.size
    if value_type != GGUFValueType.ARRAY:
        raise ValueError(f"unknown value type {value_type}")
    raw_item_type, length = struct.unpack_from("<IQ", buf, offset)
    item_type = GGUFValueType(raw_item_type)
    offset += 12
    if item_type in _SCALAR_FORMATS:
        item_size = struct.calcsize(_SCALAR_FORMATS[item_type])
        if offset + length * item_size > len(buf):
            raise _PastEnd
        items = struct.unpack_from(f"<{length}{_SCALAR_FORMATS[item_type]}", buf, offset)
        return list(items), offset + length * item_size
    if offset + length * 8 > len(buf):  # every item has at least an 8-byte length
        raise _PastEnd
    if item_type == GGUFValueType.STRING:
        unpack_length = _U64.unpack_from
        for _ in range(length):  # the hot loop: a vocabulary has up to hundreds of thousands of strings
            offset += 8 + unpack_length(buf, offset)[0]
        if offset > len(buf):
            raise _PastEnd
    else:
        for _ in range(length):
            _, offset = _value(buf, offset, item_type)
    return UndecodedArray(item_type, length), offset
