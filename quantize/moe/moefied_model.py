"""A dense llama-family model with its feed-forward blocks cut into experts, as transformers'
MixtralForCausalLM and, written out, as llama.cpp's llama architecture with experts.

Exactness. llama.cpp's llama MoE (as Mixtral) takes a softmax over all experts' router logits, keeps
the top K and renormalises their K weights; each chosen expert's output is multiplied by its weight.
MoEfication wants the plain sum of the chosen experts. So every expert's down projection is scaled
by K, and the router is written as its logits divided by a temperature large enough that the chosen
weights are 1/K within 1e-3 (the ranking, hence the choice of experts, is that of the trained
router). With K = N the router is written as zeros: every weight is exactly 1/N and the factor N
restores the dense block (exactly in float for N a power of two, up to summation order otherwise).
The torch model holds exactly the tensors that are written, so torch and llama.cpp compute the same
MoE for any K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from quantize.errors import ConversionError
from quantize.gguf_names import Keys, arch_key
from quantize.torch_bridge import CarriedField

# The router's logits on the calibration text, scaled to at most this in magnitude: the renormalised
# weights of the chosen experts then differ from 1/K by about 2x this, relatively.
ROUTER_LOGIT_BOUND = 5e-4

SPLITTABLE = ("llama",)  # dense families whose blocks Mixtral's layers hold as they are


def check_splittable_type(model_type: str) -> None:
    if model_type not in SPLITTABLE:
        raise ConversionError(
            "`moe split` handles dense llama-family models (Llama, SmolLM, TinyLlama): it writes "
            "llama.cpp's llama architecture with experts, which holds their blocks as they are, not "
            f"those of a {model_type!r} model"
        )


def check_splittable(config) -> None:
    """Refuse models the split cannot hold exactly: MoE already, other families, biases."""
    model_type = config.model_type
    if getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None):
        raise ConversionError("this model is already a Mixture-of-Experts; `moe split` takes a dense model")
    check_splittable_type(model_type)
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ConversionError(
            "this model's attention or feed-forward has biases, which Mixtral's layers lack"
        )
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ConversionError(f"the feed-forward activation is {config.hidden_act!r}; the split needs SwiGLU")


def mixtral_config(dense_config, experts: int, top_k: int):
    from transformers import MixtralConfig

    c = dense_config
    return MixtralConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size // experts,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        hidden_act="silu",
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        tie_word_embeddings=c.tie_word_embeddings,
        sliding_window=None,
        rope_parameters=dict(c.rope_parameters) if getattr(c, "rope_parameters", None) else None,
        num_local_experts=experts,
        num_experts_per_tok=top_k,
        router_jitter_noise=0.0,
        output_router_logits=False,
    )


def written_router(weight, inputs, experts: int, top_k: int):
    """The router as written: zeros with every expert active, else scaled to tiny logits."""
    import torch

    if top_k == experts:
        return torch.zeros_like(weight)
    with torch.no_grad():
        largest = float((inputs @ weight.T).abs().max())
    return weight * (ROUTER_LOGIT_BOUND / max(largest, 1e-12))


def build_moe_model(dense_model, partitions: Sequence[np.ndarray], routers: Sequence, top_k: int):
    """The MixtralForCausalLM computing the split: attention, norms and embeddings copied, each
    layer's neurons regrouped by ``partitions`` ([N, width/N] each) with the down projection scaled
    by K, the routers (already in written form) as the gates."""
    import torch
    from transformers import MixtralForCausalLM

    experts = len(partitions[0])
    config = mixtral_config(dense_model.config, experts, top_k)
    with torch.device("meta"):
        model = MixtralForCausalLM(config)
    state = {}
    for key, tensor in dense_model.state_dict().items():
        if ".mlp." not in key and not key.endswith("rotary_emb.inv_freq"):
            state[key] = tensor.detach().float().clone()  # the dense model stays as it was
    for index, layer in enumerate(dense_model.model.layers):
        neurons = torch.as_tensor(np.asarray(partitions[index]), dtype=torch.long)
        gate, up = (
            layer.mlp.gate_proj.weight.detach().float(),
            layer.mlp.up_proj.weight.detach().float(),
        )  # indexed: copies
        down = layer.mlp.down_proj.weight.detach().float()
        prefix = f"model.layers.{index}.mlp."
        state[prefix + "experts.gate_up_proj"] = torch.cat([gate[neurons], up[neurons]], dim=1)
        state[prefix + "experts.down_proj"] = down[:, neurons].permute(1, 0, 2) * top_k
        state[prefix + "gate.weight"] = routers[index].float().clone()
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # its buffers, off the meta device
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ConversionError(f"the split model lacks {', '.join(missing[:3])}; this is a bug")
    return model.eval()


def moe_metadata(carried: Sequence[CarriedField], config) -> tuple[CarriedField, ...]:
    """A dense llama GGUF's metadata for the split: feed_forward_length becomes the expert's width,
    the expert counts are added; tokenizer, chat template and everything else stay."""
    import gguf

    uint32 = gguf.GGUFValueType.UINT32
    changed = {
        arch_key(Keys.LLM.FEED_FORWARD_LENGTH, "llama"): config.intermediate_size,
        arch_key(Keys.LLM.EXPERT_COUNT, "llama"): config.num_local_experts,
        arch_key(Keys.LLM.EXPERT_USED_COUNT, "llama"): config.num_experts_per_tok,
    }
    kept = tuple(field for field in carried if field.key not in changed)
    return kept + tuple(CarriedField(key, value, uint32, None) for key, value in changed.items())
