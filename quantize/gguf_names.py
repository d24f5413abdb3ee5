"""Every GGUF key, tensor name and architecture the pipeline relies on, from gguf-py's constants.

Nothing else in `quantize/` spells a GGUF key: it imports the name from here.
"""

from __future__ import annotations

import gguf

LLAMA = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]  # "llama"
SUPPORTED_ARCHITECTURES = (LLAMA,)

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


def hparam(key_template: str) -> str:
    """An architecture key for llama, e.g. hparam(Keys.LLM.CONTEXT_LENGTH) -> 'llama.context_length'."""
    return key_template.format(arch=LLAMA)


def llama_tensor_names(block_count: int) -> gguf.TensorNameMap:
    """Maps Hugging Face parameter names (model.layers.0.self_attn.q_proj...) to GGUF names
    (blk.0.attn_q...)."""
    return gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, block_count)
