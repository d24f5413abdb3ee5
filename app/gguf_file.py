"""Validate and describe a GGUF file with the `gguf` reader, before llama.cpp ever sees it."""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import gguf

from app.chat_template import fallback_template
from app.errors import ModelValidationError

# magic (4 bytes), version (u32), tensor count (u64), metadata count (u64)
_HEADER = struct.Struct("<IIQQ")


@dataclass(frozen=True)
class GGUFSummary:
    """What `lantern models info` shows, read from the file's own metadata."""

    architecture: str
    model_name: str | None
    parameter_count: int
    quantization: str
    context_length: int | None
    file_size: int
    gguf_version: int
    tensor_count: int
    chat_template: str | None

    @property
    def chat_template_source(self) -> str:
        if self.chat_template:
            return "model (tokenizer.chat_template)"
        return f"fallback ({fallback_template(self.architecture).name})"


def field_value(reader: gguf.GGUFReader, key: str):
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _check_header(path: Path, size: int) -> None:
    if size == 0:
        raise ModelValidationError(f"{path} is an empty file, not a GGUF model")
    with open(path, "rb") as f:
        head = f.read(_HEADER.size)
    if len(head) >= 4 and head[:4] != b"GGUF":
        raise ModelValidationError(f"{path} is not a GGUF file (magic {head[:4]!r}, expected b'GGUF')")
    if len(head) < _HEADER.size:
        raise ModelValidationError(f"{path} is truncated: {size} bytes is shorter than a GGUF header")
    _, version, _, _ = _HEADER.unpack(head)
    if version not in gguf.READER_SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, gguf.READER_SUPPORTED_VERSIONS))
        raise ModelValidationError(f"{path} is GGUF version {version}; Lantern reads versions {supported}")


def _quantization(reader: gguf.GGUFReader) -> str:
    file_type = field_value(reader, gguf.Keys.General.FILE_TYPE)
    if file_type is not None:
        try:
            return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    # No (known) file type recorded: name the type that holds most of the weights.
    weight = Counter()
    for tensor in reader.tensors:
        weight[tensor.tensor_type.name] += int(tensor.n_elements)
    return weight.most_common(1)[0][0] if weight else "unknown"


def open_gguf(path: Path) -> gguf.GGUFReader:
    """Open and check a GGUF file; raise ModelValidationError with a one-line reason if unusable."""
    path = Path(path)
    if not path.exists():
        raise ModelValidationError(f"{path} does not exist")
    if not path.is_file():
        raise ModelValidationError(f"{path} is not a regular file")
    size = path.stat().st_size
    _check_header(path, size)
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, struct.error, OverflowError, UnicodeDecodeError) as exc:
        raise ModelValidationError(
            f"{path} is truncated or corrupt: the GGUF reader stopped with '{exc}'"
        ) from None

    if not reader.tensors:
        raise ModelValidationError(f"{path} has an empty tensor table; it holds no weights")
    data_end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    if data_end > size:
        raise ModelValidationError(
            f"{path} is truncated: its tensor table needs {data_end} bytes, the file has {size}"
        )
    architecture = field_value(reader, gguf.Keys.General.ARCHITECTURE)
    if not isinstance(architecture, str) or not architecture:
        raise ModelValidationError(f"{path} names no architecture (general.architecture)")
    return reader


def summarize_gguf(reader: gguf.GGUFReader) -> GGUFSummary:
    """The summary of a file ``open_gguf`` has checked."""
    architecture = field_value(reader, gguf.Keys.General.ARCHITECTURE)
    context_length = field_value(reader, gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=architecture))
    template = field_value(reader, gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    return GGUFSummary(
        architecture=architecture,
        model_name=field_value(reader, gguf.Keys.General.NAME),
        parameter_count=sum(int(t.n_elements) for t in reader.tensors),
        quantization=_quantization(reader),
        context_length=int(context_length) if context_length is not None else None,
        file_size=int(reader.data.shape[0]),
        gguf_version=int(field_value(reader, "GGUF.version")),
        tensor_count=len(reader.tensors),
        chat_template=template if isinstance(template, str) and template.strip() else None,
    )


def inspect_gguf(path: Path) -> GGUFSummary:
    """Read and check a GGUF file; raise ModelValidationError with a one-line reason if unusable."""
    return summarize_gguf(open_gguf(path))
