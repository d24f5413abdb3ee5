"""A model's hyper-parameters between transformers' config and llama.cpp's GGUF keys.

Writing (a Hugging Face folder -> GGUF) uses gguf-py's writer methods, one per key. Reading (GGUF ->
torch) is transformers' job; `complete_config` only fills in what its GGUF reader leaves at a
default although the file says otherwise (head size, expert sizes), and what llama.cpp fixes in code
rather than in the file (Gemma 3's attention scale). `check_llama_cpp_agrees` refuses a folder whose
settings llama.cpp would compute differently, instead of writing a file that answers wrongly.
"""

from __future__ import annotations

from typing import Any

import gguf

from quantize.errors import ConversionError
from quantize.families import Family, check_experts
from quantize.gguf_names import Keys, arch_key

GEMMA3_FULL_ATTENTION_EVERY = 6  # llama.cpp's gemma3: every 6th layer attends globally, the rest locally
GEMMA3_LOCAL_ROPE_BASE = 10000.0  # llama.cpp's gemma3: rope base of the local (sliding) layers
GEMMA3_27B_LAYERS = 62  # llama.cpp scales gemma3-27B's queries by hidden/heads, the others by head size


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rope_theta(config, layer_type: str = "full_attention") -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    rope = rope.get(layer_type, rope)  # Gemma 3 keeps one set per kind of layer
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise ConversionError(f"rope scaling {rope_type!r} is not supported by Lantern's GGUF writer yet")
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def gemma3_query_scale_base(config) -> int:
    if config.num_hidden_layers == GEMMA3_27B_LAYERS:
        return config.hidden_size // config.num_attention_heads
    return head_dim(config)


def gemma3_layer_types(layers: int) -> list[str]:
    return [
        "full_attention" if (index + 1) % GEMMA3_FULL_ATTENTION_EVERY == 0 else "sliding_attention"
        for index in range(layers)
    ]


def expert_count(config) -> int | None:
    """Experts per layer: Mixtral's config calls them local experts, the Qwen MoE ones experts."""
    return getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)


def check_llama_cpp_agrees(family: Family, config, where: str) -> None:
    """Refuse settings that llama.cpp's implementation of the family does not follow."""
    rope_theta(config)
    if family.moe:
        check_experts(where, expert_count(config), getattr(config, "num_experts_per_tok", None))
        if getattr(config, "decoder_sparse_step", 1) != 1 or getattr(config, "mlp_only_layers", None):
            raise ConversionError(
                f"{where} mixes dense and expert layers; llama.cpp's {family.arch} has experts in every layer"
            )
        normalised = bool(getattr(config, "norm_topk_prob", False))
        normalised = normalised or family.hf_model_type == "mixtral"  # Mixtral always renormalises
        llama_cpp_normalises = family.arch in ("qwen3moe", "llama")
        if normalised != llama_cpp_normalises:
            raise ConversionError(
                f"{where} sets norm_topk_prob={normalised}, but llama.cpp's {family.arch} "
                f"{'always' if llama_cpp_normalises else 'never'} renormalises the chosen experts' weights"
            )
    if family.arch == "gemma3":
        differences = []
        if getattr(config, "query_pre_attn_scalar", None) != gemma3_query_scale_base(config):
            differences.append(f"query_pre_attn_scalar {config.query_pre_attn_scalar}")
        if list(config.layer_types) != gemma3_layer_types(config.num_hidden_layers):
            differences.append("the pattern of sliding and full attention layers")
        if rope_theta(config, "sliding_attention") != GEMMA3_LOCAL_ROPE_BASE:
            differences.append("the local rope base")
        softcapping = ("final_logit_softcapping", "attn_logit_softcapping")
        if any(getattr(config, key, None) for key in softcapping):
            differences.append("logit soft-capping")
        if differences:
            raise ConversionError(f"{where}: llama.cpp's gemma3 fixes {', '.join(differences)} otherwise")


def write_hparams(writer: gguf.GGUFWriter, family: Family, config) -> None:
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_key_length(head_dim(config))
    writer.add_value_length(head_dim(config))
    writer.add_rope_dimension_count(int(head_dim(config) * getattr(config, "partial_rotary_factor", 1.0)))
    writer.add_vocab_size(config.vocab_size)
    if getattr(config, "sliding_window", None) and family.arch in ("gemma3", "phi3"):
        writer.add_sliding_window(config.sliding_window)
    if family.moe:
        writer.add_expert_count(expert_count(config))
        writer.add_expert_used_count(config.num_experts_per_tok)
        # Mixtral's experts are feed_forward_length wide; the Qwen MoEs give them a key of their own.
        if expert_width := getattr(config, "moe_intermediate_size", None):
            writer.add_expert_feed_forward_length(expert_width)
        if shared := getattr(config, "shared_expert_intermediate_size", None):
            writer.add_expert_shared_feed_forward_length(shared)


def complete_config(config, family: Family, fields: dict[str, Any]) -> None:
    """Fill in what transformers' GGUF reader leaves at its defaults (``fields``: the file's keys)."""

    def value(template: str):
        return fields.get(arch_key(template, family.arch))

    if (key_length := value(Keys.Attention.KEY_LENGTH)) and hasattr(config, "head_dim"):
        config.head_dim = int(key_length)
    if (expert_ff := value(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH)) and hasattr(config, "moe_intermediate_size"):
        config.moe_intermediate_size = int(expert_ff)
    if (shared_ff := value(Keys.LLM.EXPERT_SHARED_FEED_FORWARD_LENGTH)) and hasattr(
        config, "shared_expert_intermediate_size"
    ):
        config.shared_expert_intermediate_size = int(shared_ff)
    if family.arch == "gemma3":
        config.query_pre_attn_scalar = gemma3_query_scale_base(config)
        config.layer_types = gemma3_layer_types(config.num_hidden_layers)
