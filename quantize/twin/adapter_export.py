"""A peft LoRA adapter -> a llama.cpp GGUF LoRA adapter, hot-loaded on top of the base model.

llama.cpp names each pair after the base tensor (blk.3.attn_q.weight.lora_a / .lora_b), stores A
as (rank, in) and B as (out, rank) in numpy order, and scales B·A by alpha / rank, as peft does.
Q and K rows are reordered like the base weights (gguf_export.to_llama_cpp_rows).
"""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import numpy as np

from quantize.errors import ConversionError
from quantize.gguf_export import to_llama_cpp_rows
from quantize.gguf_names import (
    ADAPTER_KIND,
    ADAPTER_LORA_ALPHA,
    ADAPTER_TYPE,
    LLAMA,
    LORA_A_SUFFIX,
    LORA_B_SUFFIX,
    MODEL_NAME,
    llama_tensor_names,
)

_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.default)?\.weight$")


def lora_pairs(peft_model) -> dict[str, dict[str, np.ndarray]]:
    """HF module name -> {"A": (rank, in), "B": (out, rank)} from a peft model's adapter weights."""
    from peft import get_peft_model_state_dict

    from quantize.twin.trainer import quiet_library_warnings

    pairs: dict[str, dict[str, np.ndarray]] = {}
    with quiet_library_warnings():
        weights = get_peft_model_state_dict(peft_model)
    for key, tensor in weights.items():
        match = _PEFT_KEY.match(key)
        if match is None:
            raise ConversionError(f"unexpected adapter weight {key!r}: only LoRA A/B matrices are exported")
        pairs.setdefault(match["module"], {})[match["part"]] = tensor.detach().float().cpu().numpy()
    return pairs


def export_lora_gguf(peft_model, out: Path, name: str, dtype: str = "F32") -> int:
    """Write the adapter to ``out``; return how many weight matrices it adapts."""
    config = peft_model.config if hasattr(peft_model, "config") else peft_model.base_model.config
    lora_config = peft_model.peft_config["default"]
    if getattr(lora_config, "use_rslora", False):
        raise ConversionError("rank-stabilised LoRA scales differently from llama.cpp; train without it")
    names = llama_tensor_names(config.num_hidden_layers)
    writer = gguf.GGUFWriter(out, LLAMA)
    writer.add_type(ADAPTER_KIND)
    writer.add_string(ADAPTER_TYPE, "lora")
    writer.add_float32(ADAPTER_LORA_ALPHA, float(lora_config.lora_alpha))
    writer.add_string(MODEL_NAME, name)
    pairs = lora_pairs(peft_model)
    for module, pair in sorted(pairs.items()):
        base_name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if base_name is None or set(pair) != {"A", "B"}:
            raise ConversionError(f"cannot place the adapter of {module!r} in a llama.cpp adapter")
        a, b = pair["A"], pair["B"]
        if module.endswith("self_attn.q_proj"):
            b = to_llama_cpp_rows(b, config.num_attention_heads)
        elif module.endswith("self_attn.k_proj"):
            b = to_llama_cpp_rows(b, config.num_key_value_heads)
        numpy_type = np.float16 if dtype == "F16" else np.float32
        writer.add_tensor(base_name + LORA_A_SUFFIX, np.ascontiguousarray(a, dtype=numpy_type))
        writer.add_tensor(base_name + LORA_B_SUFFIX, np.ascontiguousarray(b, dtype=numpy_type))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return len(pairs)
