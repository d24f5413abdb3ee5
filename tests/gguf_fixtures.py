"""Small GGUF files written with gguf-py, for tests that need a model of a given shape."""

from __future__ import annotations

import gguf
import numpy as np


def write_tiny_qwen3moe(path):
    """A small but valid qwen3moe GGUF: 2 layers of 8 experts, 2 used per token."""
    t = gguf.MODEL_TENSOR
    writer = gguf.GGUFWriter(path, arch="qwen3moe")
    writer.add_context_length(256)
    writer.add_block_count(2)
    writer.add_embedding_length(16)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_key_length(8)  # qwen3 heads are wider than 16 / 4
    writer.add_value_length(8)
    writer.add_expert_count(8)
    writer.add_expert_used_count(2)
    writer.add_expert_feed_forward_length(12)

    def add(kind, shape, bid=None):
        name = gguf.TENSOR_NAMES[kind].format(bid=bid) + ".weight"
        writer.add_tensor(name, np.zeros(shape, dtype=np.float32))

    add(t.TOKEN_EMBD, (32, 16))
    add(t.OUTPUT_NORM, (16,))
    add(t.OUTPUT, (32, 16))
    for bid in range(2):
        add(t.ATTN_NORM, (16,), bid)
        add(t.ATTN_Q, (32, 16), bid)
        add(t.ATTN_K, (16, 16), bid)
        add(t.ATTN_V, (16, 16), bid)
        add(t.ATTN_OUT, (16, 32), bid)
        add(t.ATTN_Q_NORM, (8,), bid)
        add(t.ATTN_K_NORM, (8,), bid)
        add(t.FFN_NORM, (16,), bid)
        add(t.FFN_GATE_INP, (8, 16), bid)
        add(t.FFN_GATE_EXP, (8, 12, 16), bid)  # numpy [expert, ff, hidden]: experts last in GGUF
        add(t.FFN_UP_EXP, (8, 12, 16), bid)
        add(t.FFN_DOWN_EXP, (8, 16, 12), bid)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_one_tensor_gguf(path, arch: str) -> None:
    """A GGUF of architecture ``arch`` with one tensor: enough for a reader to name the family."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_cpp_logits(
    model, ids: list[int], adapter=None, scale: float = 1.0, f32_cache: bool = False
) -> np.ndarray:
    """llama.cpp's logits for every position of ``ids``, with a LoRA adapter at ``scale`` if given;
    ``f32_cache`` keeps the KV cache in F32 (llama.cpp's default F16 rounds attention's inputs)."""
    import llama_cpp

    extra = {"lora_path": str(adapter), "lora_scale": scale} if adapter else {}
    if f32_cache:
        extra.update(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=256, logits_all=True, verbose=False, **extra)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
