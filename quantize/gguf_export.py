"""A llama-architecture torch model -> a GGUF file llama.cpp loads, with tokenizer and chat template.

From a GGUF source every metadata key is carried over unchanged (tokenizer, chat template,
hyper-parameters), so a round trip changes nothing but the tensor type. From a Hugging Face folder
the hyper-parameters come from config.json and the tokenizer from tokenizer.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np

from quantize.errors import ConversionError
from quantize.gguf_names import LLAMA, MODEL_NAME, Keys, hparam, llama_tensor_names
from quantize.hf_tokenizer import add_hf_tokenizer, detect_pre_tokenizer
from quantize.quant_types import FLOAT_FILE_TYPES, FLOAT_TYPES
from quantize.torch_bridge import CarriedField, TorchModel


def export_gguf(torch_model: TorchModel, out: Path, out_type: str = "F16", name: str | None = None) -> None:
    """Write ``torch_model`` to ``out`` (a path the caller makes atomic) as ``out_type`` floats."""
    model = torch_model.model
    write_gguf(
        model,
        out,
        out_type,
        carried=torch_model.carried_metadata,
        hf_folder=torch_model.source.path if torch_model.source.kind == "hf" else None,
        tokenizer=torch_model.tokenizer,
        name=name,
    )


def write_gguf(
    model,
    out: Path,
    out_type: str,
    carried: Sequence[CarriedField] | None,
    hf_folder: Path | None = None,
    tokenizer=None,
    name: str | None = None,
) -> None:
    config = model.config
    writer = gguf.GGUFWriter(out, LLAMA)
    if carried is not None:
        for field in carried:
            if name and field.key == MODEL_NAME:
                continue
            writer.add_key_value(field.key, field.value, field.value_type, field.sub_type)
    else:
        assert hf_folder is not None and tokenizer is not None
        _add_hparams(writer, config)
        pre = detect_pre_tokenizer(hf_folder, tokenizer, lambda probe: _add_hparams(probe, config))
        add_hf_tokenizer(writer, hf_folder, pre, tokenizer)
    if name:
        writer.add_key_value(MODEL_NAME, name, gguf.GGUFValueType.STRING)
    writer.add_file_type(FLOAT_FILE_TYPES[out_type])
    for gguf_name, array, raw_type in _tensors(model, out_type):
        writer.add_tensor(gguf_name, array, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_hparams(writer: gguf.GGUFWriter, config) -> None:
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise ConversionError(f"rope scaling {rope_type!r} is not supported by Lantern's GGUF writer yet")
    rope_theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(getattr(config, "name_or_path", "") or "model")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    assert hparam(Keys.LLM.CONTEXT_LENGTH) == f"{LLAMA}.context_length"


def to_llama_cpp_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder Q/K projection rows from Hugging Face's rotate-half RoPE layout to llama.cpp's
    interleaved one (the inverse of what transformers does when it loads a GGUF)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _tensors(model, out_type: str):
    import torch

    config = model.config
    names = llama_tensor_names(config.num_hidden_layers)
    state = model.state_dict()
    tied = getattr(config, "tie_word_embeddings", False)
    for key, tensor in state.items():
        if key == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd as the output matrix when output.weight is absent
        if key.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConversionError(f"no GGUF name for parameter {key!r}; is this a plain llama model?")
        array = tensor.detach().to(torch.float32).cpu().numpy()
        if key.endswith("self_attn.q_proj.weight"):
            array = to_llama_cpp_rows(array, config.num_attention_heads)
        elif key.endswith("self_attn.k_proj.weight"):
            array = to_llama_cpp_rows(array, config.num_key_value_heads)
        yield (gguf_name, *_encode(array, out_type))


def _encode(array: np.ndarray, out_type: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType | None]:
    if array.ndim == 1 or out_type == "F32":  # norms stay F32, as llama.cpp's converter keeps them
        return np.ascontiguousarray(array, dtype=np.float32), None
    if out_type == "F16":
        return np.ascontiguousarray(array, dtype=np.float16), None
    return gguf.quants.quantize(array, FLOAT_TYPES["BF16"]), FLOAT_TYPES["BF16"]
