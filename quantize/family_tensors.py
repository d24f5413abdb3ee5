"""A torch model's parameters as the tensors llama.cpp computes with, for every supported family.

The inverse of what transformers does when it reads a GGUF: Q/K rows interleaved again for llama,
1 added back to Gemma's norms, each layer's stacked experts split into gate and up, the shared
expert's gate flattened.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from quantize.errors import ConversionError
from quantize.families import Family
from quantize.gguf_names import EXPERT_GATE, EXPERT_UP, expert_tensor_name

_FUSED_EXPERTS = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.gate_up_proj")
_SUFFIXES = (".weight", ".bias")


def to_llama_cpp_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder Q/K projection rows from Hugging Face's rotate-half RoPE layout to llama.cpp's
    interleaved one (the inverse of what transformers does when it loads a llama GGUF)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def gguf_name(family: Family, names, key: str) -> str | None:
    """The GGUF tensor name of parameter ``key``, or None if gguf-py's table has none."""
    mapped = names.get_name(key, try_suffixes=_SUFFIXES)
    if mapped is None:
        return None
    return mapped if mapped.endswith(_SUFFIXES) else mapped + ".weight"  # experts: no .weight in torch


def llama_cpp_tensors(model, family: Family) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every parameter of ``model``, in llama.cpp's layout."""
    import torch

    config = model.config
    names = family.tensor_names(config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd as the output matrix when output.weight is absent
        if key.endswith("rotary_emb.inv_freq"):
            continue
        array = tensor.detach().to(torch.float32).cpu().numpy()
        if fused := _FUSED_EXPERTS.fullmatch(key):
            block = int(fused.group(1))
            gate, up = np.split(array, 2, axis=1)  # transformers stacks gate above up for each expert
            yield expert_tensor_name(EXPERT_GATE, block), np.ascontiguousarray(gate)
            yield expert_tensor_name(EXPERT_UP, block), np.ascontiguousarray(up)
            continue
        name = gguf_name(family, names, key)
        if name is None:
            raise ConversionError(f"no GGUF name for parameter {key!r} of a {family.arch} model")
        yield name, to_llama_cpp_layout(family, config, name, array)


def to_llama_cpp_layout(family: Family, config, name: str, array: np.ndarray) -> np.ndarray:
    if family.permuted_qk_rows and name.endswith("attn_q.weight"):
        return to_llama_cpp_rows(array, config.num_attention_heads)
    if family.permuted_qk_rows and name.endswith("attn_k.weight"):
        return to_llama_cpp_rows(array, config.num_key_value_heads)
    if family.norm_offset and name.endswith("norm.weight"):
        return array + np.float32(family.norm_offset)
    if name.endswith("ffn_gate_inp_shexp.weight"):
        return array.reshape(-1)  # llama.cpp wants the shared expert's gate as a vector
    return array


def keeps_f32(name: str, array: np.ndarray) -> bool:
    """Vectors (norms, biases) and expert routers stay F32, as llama.cpp's own converter keeps them:
    a router rounded to F16 can pick other experts than the torch model does."""
    return array.ndim == 1 or name.endswith("ffn_gate_inp.weight")
