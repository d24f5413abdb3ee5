"""Every GGUF key, tensor name and architecture the pipeline relies on, from gguf-py's constants.

Nothing else in `quantize/` spells a GGUF key: it imports the name from here.
"""

from __future__ import annotations

import gguf

LLAMA = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]  # "llama"

Keys = gguf.Keys
ARCHITECTURE = Keys.General.ARCHITECTURE
FILE_TYPE = Keys.General.FILE_TYPE
QUANTIZATION_VERSION = Keys.General.QUANTIZATION_VERSION
MODEL_NAME = Keys.General.NAME
CHAT_TEMPLATE = Keys.Tokenizer.CHAT_TEMPLATE
TOKENIZER_PREFIX = "tokenizer."

# Keys the GGUF writer sets itself, or that describe the old file's tensors rather than the model.
NOT_COPIED = {ARCHITECTURE, FILE_TYPE, QUANTIZATION_VERSION}
READER_INTERNAL_PREFIX = "GGUF."

# What a LoRA adapter file declares (llama.cpp's adapter loader reads these).
FILE_KIND = Keys.General.TYPE  # "model" or "adapter"
ADAPTER_KIND = gguf.GGUFType.ADAPTER
ADAPTER_TYPE = Keys.Adapter.TYPE
ADAPTER_LORA_ALPHA = Keys.Adapter.LORA_ALPHA
LORA_A_SUFFIX = ".lora_a"  # appended to the base tensor's name: blk.0.attn_q.weight.lora_a
LORA_B_SUFFIX = ".lora_b"


def arch_key(key_template: str, arch: str) -> str:
    """An architecture key, e.g. arch_key(Keys.LLM.EXPERT_COUNT, "qwen3moe") -> 'qwen3moe.expert_count'."""
    return key_template.format(arch=arch)


def expert_tensor_name(tensor: gguf.MODEL_TENSOR, block: int) -> str:
    """The GGUF name of a layer's stacked experts, e.g. blk.3.ffn_gate_exps.weight."""
    return gguf.TENSOR_NAMES[tensor].format(bid=block) + ".weight"


EXPERT_GATE, EXPERT_UP = gguf.MODEL_TENSOR.FFN_GATE_EXP, gguf.MODEL_TENSOR.FFN_UP_EXP

# Tensors stacked along the expert axis (the outermost numpy axis): every `*_exps` tensor of a layer,
# the router's rows and the router's selection bias. A shared expert (`*_shexp`) is not among them.
_ROUTER = (gguf.MODEL_TENSOR.FFN_GATE_INP, gguf.MODEL_TENSOR.FFN_EXP_PROBS_B)
EXPERT_AXIS_TENSORS = frozenset(
    template for kind, template in gguf.TENSOR_NAMES.items() if template.endswith("_exps") or kind in _ROUTER
)


def expert_axis_template(tensor_name: str) -> str | None:
    """The template ('blk.{bid}.ffn_up_exps') of a per-layer tensor stacked by expert, else None."""
    parts = tensor_name.split(".")
    if len(parts) < 3 or parts[0] != "blk" or not parts[1].isdigit():
        return None
    template = f"blk.{{bid}}.{parts[2]}"
    return template if template in EXPERT_AXIS_TENSORS else None
