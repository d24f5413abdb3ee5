"""Validate and describe a GGUF file from its header, before llama.cpp ever sees it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import gguf

from app.chat_template import fallback_template
from app.errors import ModelValidationError
from app.gguf_header import GGUFHeader, read_gguf_header


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


def _quantization(header: GGUFHeader) -> str:
    file_type = header.get(gguf.Keys.General.FILE_TYPE)
    if file_type is not None:
        try:
            return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    # No (known) file type recorded: name the type that holds most of the weights.
    weight = Counter()
    for tensor in header.tensors:
        weight[tensor.tensor_type.name] += tensor.n_elements
    return weight.most_common(1)[0][0] if weight else "unknown"


def open_gguf(path: Path) -> GGUFHeader:
    """Open and check a GGUF file; raise ModelValidationError with a one-line reason if unusable."""
    path = Path(path)
    if not path.exists():
        raise ModelValidationError(f"{path} does not exist")
    if not path.is_file():
        raise ModelValidationError(f"{path} is not a regular file")
    header = read_gguf_header(path)

    if not header.tensors:
        raise ModelValidationError(f"{path} has an empty tensor table; it holds no weights")
    data_end = max(t.data_offset + t.n_bytes for t in header.tensors)
    if data_end > header.file_size:
        raise ModelValidationError(
            f"{path} is truncated: its tensor table needs {data_end} bytes, the file has {header.file_size}"
        )
    architecture = header.get(gguf.Keys.General.ARCHITECTURE)
    if not isinstance(architecture, str) or not architecture:
        raise ModelValidationError(f"{path} names no architecture (general.architecture)")
    return header


def summarize_gguf(header: GGUFHeader) -> GGUFSummary:
    """The summary of a file ``open_gguf`` has checked."""
    architecture = header.get(gguf.Keys.General.ARCHITECTURE)
    context_length = header.get(gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=architecture))
    template = header.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    return GGUFSummary(
        architecture=architecture,
        model_name=header.get(gguf.Keys.General.NAME),
        parameter_count=sum(t.n_elements for t in header.tensors),
        quantization=_quantization(header),
        context_length=int(context_length) if context_length is not None else None,
        file_size=header.file_size,
        gguf_version=header.version,
        tensor_count=len(header.tensors),
        chat_template=template if isinstance(template, str) and template.strip() else None,
    )


def inspect_gguf(path: Path) -> GGUFSummary:
    """Read and check a GGUF file; raise ModelValidationError with a one-line reason if unusable."""
    return summarize_gguf(open_gguf(path))
