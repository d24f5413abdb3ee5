"""A torch model of any supported family -> a GGUF file llama.cpp loads, with tokenizer and chat template.

From a GGUF source every metadata key is carried over unchanged (tokenizer, chat template,
hyper-parameters), so a round trip changes nothing but the tensor type. From a Hugging Face folder
the hyper-parameters come from config.json and the tokenizer from tokenizer.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np

from quantize.families import Family, family_for_model_type
from quantize.family_hparams import check_llama_cpp_agrees, write_hparams
from quantize.family_tensors import keeps_f32, llama_cpp_tensors
from quantize.gguf_names import MODEL_NAME
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


def model_family(model) -> Family:
    return family_for_model_type(model.config.model_type, "the torch model")


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
    family = model_family(model)
    writer = gguf.GGUFWriter(out, family.arch)
    if carried is not None:
        for field in carried:
            if name and field.key == MODEL_NAME:
                continue
            writer.add_key_value(field.key, field.value, field.value_type, field.sub_type)
    else:
        assert hf_folder is not None and tokenizer is not None
        check_llama_cpp_agrees(family, config, str(hf_folder))
        write_hparams(writer, family, config)
        pre = detect_pre_tokenizer(
            hf_folder, tokenizer, family.arch, lambda probe: write_hparams(probe, family, config)
        )
        add_hf_tokenizer(writer, hf_folder, pre, tokenizer)
    if name or carried is None:
        name = name or getattr(config, "name_or_path", "") or "model"
        writer.add_key_value(MODEL_NAME, name, gguf.GGUFValueType.STRING)
    writer.add_file_type(FLOAT_FILE_TYPES[out_type])
    for gguf_name, array in llama_cpp_tensors(model, family):
        encoded, raw_type = _encode(gguf_name, array, out_type)
        writer.add_tensor(gguf_name, encoded, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _encode(
    name: str, array: np.ndarray, out_type: str
) -> tuple[np.ndarray, gguf.GGMLQuantizationType | None]:
    if keeps_f32(name, array) or out_type == "F32":
        return np.ascontiguousarray(array, dtype=np.float32), None
    if out_type == "F16":
        return np.ascontiguousarray(array, dtype=np.float16), None
    return gguf.quants.quantize(array, FLOAT_TYPES["BF16"]), FLOAT_TYPES["BF16"]
