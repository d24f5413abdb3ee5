"""Quantize a GGUF with llama.cpp's own quantizer (`llama_model_quantize`)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

from quantize.cores import usable_cores
from quantize.errors import ConversionError
from quantize.imatrix import ImportanceMatrix
from quantize.native_output import captured_native_output
from quantize.quant_types import QuantType

REQUANTIZE_NOTE = (
    "the source is already quantized, so its rounding errors add up; quantize from an F16/BF16/F32 "
    "export ('lantern convert SRC -o F16.gguf') for the best quality"
)


@dataclass(frozen=True)
class QuantizeReport:
    type: str
    from_quantized: bool  # the source was not a float model: errors compound
    imatrix_tokens: int | None


def quantize_gguf(
    source: Path,
    source_is_float: bool,
    out: Path,
    qtype: QuantType,
    imatrix: ImportanceMatrix | None = None,
    threads: int | None = None,
) -> QuantizeReport:
    """Write ``source`` quantized to ``qtype`` at ``out`` (a temp path the caller renames)."""
    import llama_cpp

    if qtype.needs_imatrix and imatrix is None:
        raise ConversionError(
            f"{qtype.name} needs an importance matrix; add --imatrix-from NOTES "
            "(a folder of your notes) or choose Q3_K_M or above"
        )
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = qtype.llama_ftype
    params.nthread = threads or usable_cores()
    params.allow_requantize = not source_is_float
    holder = None
    if imatrix is not None:
        params.imatrix, holder = imatrix.as_llama_cpp()
    with captured_native_output() as output:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    del holder
    if status != 0:
        raise ConversionError(
            f"llama.cpp could not quantize {source} to {qtype.name} (status {status}):\n{output.tail()}"
        )
    return QuantizeReport(qtype.name, not source_is_float, imatrix.tokens if imatrix else None)
