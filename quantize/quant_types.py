"""The output types Lantern offers: float types its own GGUF writer produces, and the quantized
types llama.cpp's quantizer produces."""

from __future__ import annotations

from dataclasses import dataclass

import gguf
import llama_cpp

from quantize.errors import ConversionError


@dataclass(frozen=True)
class QuantType:
    name: str
    llama_ftype: int
    needs_imatrix: bool = False  # llama.cpp refuses these without an importance matrix


# Float types: written by quantize.gguf_export straight from torch tensors.
FLOAT_TYPES = {
    "F32": gguf.GGMLQuantizationType.F32,
    "F16": gguf.GGMLQuantizationType.F16,
    "BF16": gguf.GGMLQuantizationType.BF16,
}
FLOAT_FILE_TYPES = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "BF16": gguf.LlamaFileType.MOSTLY_BF16,
}

_LOW_BIT_NEEDING_IMATRIX = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K_S"}

QUANT_TYPES = {
    name: QuantType(name, getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}"), name in _LOW_BIT_NEEDING_IMATRIX)
    for name in (
        "Q8_0",
        "Q6_K",
        "Q5_K_M",
        "Q5_K_S",
        "Q5_1",
        "Q5_0",
        "Q4_K_M",
        "Q4_K_S",
        "Q4_1",
        "Q4_0",
        "Q3_K_L",
        "Q3_K_M",
        "Q3_K_S",
        "Q2_K",
        "Q2_K_S",
        "IQ4_NL",
        "IQ4_XS",
        "IQ3_M",
        "IQ3_S",
        "IQ3_XS",
        "IQ3_XXS",
        "IQ2_M",
        "IQ2_S",
        "IQ2_XS",
        "IQ2_XXS",
        "IQ1_M",
        "IQ1_S",
        "F16",
        "BF16",
    )
}


def quant_type(name: str) -> QuantType:
    key = name.upper()
    if key not in QUANT_TYPES:
        raise ConversionError(
            f"unsupported quantization type {name!r}; choose one of: {', '.join(QUANT_TYPES)}"
        )
    return QUANT_TYPES[key]


def float_type(name: str) -> str:
    key = name.upper()
    if key not in FLOAT_TYPES:
        raise ConversionError(
            f"convert writes {', '.join(FLOAT_TYPES)}; for {name!r} convert first, then "
            f"'lantern quantize OUT --type {name}'"
        )
    return key
