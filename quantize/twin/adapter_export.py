"""A peft LoRA adapter -> a llama.cpp GGUF LoRA adapter, hot-loaded on top of the base model.

llama.cpp names each pair after the base tensor (blk.3.attn_q.weight.lora_a / .lora_b), stores A
as (rank, in) and B as (out, rank) in numpy order, and scales B·A by alpha / rank, as peft does.
B's rows are laid out like the base weights (family_tensors: llama's Q/K order). LoRA on a Mixture-of-
Experts layer's stacked experts becomes one A and one B per expert, stacked like the experts
(experts, rank, in) and (experts, out, rank); the fused gate/up experts give two pairs that share A.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np

from app.atomic import atomic_output_path
from app.private_files import write_private
from app.private_temp import private_temp_file
from quantize.errors import ConversionError
from quantize.families import Family, family_for_model_type
from quantize.family_tensors import gguf_name, to_llama_cpp_layout
from quantize.gguf_names import (
    ADAPTER_KIND,
    ADAPTER_LORA_ALPHA,
    ADAPTER_TYPE,
    EXPERT_GATE,
    EXPERT_UP,
    LORA_A_SUFFIX,
    LORA_B_SUFFIX,
    MODEL_NAME,
    expert_tensor_name,
)
from rag.crypto import Cipher

_PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+?)(?:\.base_layer)*\.lora_(?P<part>[AB])(?:\.default)?\.weight$"
)
_EXPERTS = re.compile(r"model\.layers\.(?P<block>\d+)\.mlp\.experts(?:\.base_layer)*")


def lora_pairs(peft_model) -> dict[str, dict[str, np.ndarray]]:
    """HF module name -> {"A": ..., "B": ...} from a peft model's adapter weights."""
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


def _expert_pairs(peft_model, config) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(GGUF base name, A, B) for LoRA on stacked experts, from peft's parameter wrappers: A is
    (experts x rank, in) grouped by expert, B is (out, rank x experts) with the expert varying fastest."""
    experts = config.num_experts
    for module_name, module in peft_model.named_modules():
        parameter = getattr(module, "parameter_name", None)
        if parameter is None or "default" not in getattr(module, "lora_A", {}):
            continue
        block = _EXPERTS.search(module_name)
        if block is None:
            raise ConversionError(f"cannot place the adapter of {module_name!r} in a llama.cpp adapter")
        a = module.lora_A["default"].weight.detach().float().cpu().numpy()
        b = module.lora_B["default"].weight.detach().float().cpu().numpy()
        a = a.reshape(experts, -1, a.shape[-1])  # (experts, rank, in)
        b = np.moveaxis(b.reshape(b.shape[0], -1, experts), 2, 0)  # (experts, out, rank)
        index = int(block["block"])
        if parameter == "gate_up_proj":
            gate, up = np.split(b, 2, axis=1)
            yield expert_tensor_name(EXPERT_GATE, index), a, gate
            yield expert_tensor_name(EXPERT_UP, index), a, up
        else:
            yield expert_tensor_name(gguf.MODEL_TENSOR.FFN_DOWN_EXP, index), a, b


def _module_pairs(peft_model, family: Family, config) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    names = family.tensor_names(config.num_hidden_layers)
    for module, pair in sorted(lora_pairs(peft_model).items()):
        if _EXPERTS.fullmatch(module):
            continue  # stacked experts: _expert_pairs
        base_name = gguf_name(family, names, module + ".weight")
        if base_name is None or set(pair) != {"A", "B"}:
            raise ConversionError(f"cannot place the adapter of {module!r} in a llama.cpp adapter")
        # B's rows are the adapted matrix's output rows: laid out as the base tensor's are.
        yield base_name, pair["A"], to_llama_cpp_layout(family, config, base_name, pair["B"])


def export_lora_gguf(peft_model, out: Path, name: str, dtype: str = "F32") -> int:
    """Write the adapter to ``out``; return how many weight tensors it adapts."""
    config = peft_model.config if hasattr(peft_model, "config") else peft_model.base_model.config
    family = family_for_model_type(config.model_type, "the twin's base model")
    lora_config = peft_model.peft_config["default"]
    if getattr(lora_config, "use_rslora", False):
        raise ConversionError("rank-stabilised LoRA scales differently from llama.cpp; train without it")
    writer = gguf.GGUFWriter(out, family.arch)
    writer.add_type(ADAPTER_KIND)
    writer.add_string(ADAPTER_TYPE, "lora")
    writer.add_float32(ADAPTER_LORA_ALPHA, float(lora_config.lora_alpha))
    writer.add_string(MODEL_NAME, name)
    numpy_type = np.float16 if dtype == "F16" else np.float32
    adapted = 0
    pairs = list(_module_pairs(peft_model, family, config))
    if getattr(config, "num_experts", None):
        pairs += list(_expert_pairs(peft_model, config))
    for base_name, a, b in pairs:
        writer.add_tensor(base_name + LORA_A_SUFFIX, np.ascontiguousarray(a, dtype=numpy_type))
        writer.add_tensor(base_name + LORA_B_SUFFIX, np.ascontiguousarray(b, dtype=numpy_type))
        adapted += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return adapted


def save_adapter(peft_model, path: Path, name: str, cipher: Cipher | None) -> int:
    """Export the adapter to ``path`` atomically: plain, or sealed with ``cipher`` (an encrypted
    home), written first to a private temporary file and never in plain beside ``path``."""
    if cipher is None:
        with atomic_output_path(path, mode=0o600) as tmp:
            return export_lora_gguf(peft_model, tmp, name)
    with private_temp_file("adapter", ".gguf") as plain:
        adapted = export_lora_gguf(peft_model, plain, name)
        write_private(path, plain.read_bytes(), cipher)
    return adapted
