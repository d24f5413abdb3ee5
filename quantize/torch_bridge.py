"""GGUF (or a Hugging Face folder) -> a torch model and its tokenizer, with transformers' own loaders.

transformers dequantizes every GGUF type the `gguf` package reads (F32, F16, BF16, Q8_0, Q4_0,
Q4_1, K-quants...) and undoes each family's llama.cpp layout (quantize.family_tensors does it the
other way); `quantize.fidelity` proves the result computes what llama.cpp computes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from quantize.errors import ConversionError
from quantize.family_hparams import complete_config
from quantize.gguf_names import NOT_COPIED, READER_INTERNAL_PREFIX
from quantize.sources import ModelSource


@dataclass(frozen=True)
class CarriedField:
    """One metadata key of the source GGUF, carried over as is when a model is written back."""

    key: str
    value: Any
    value_type: gguf.GGUFValueType
    sub_type: gguf.GGUFValueType | None


@dataclass
class TorchModel:
    model: Any  # a transformers *ForCausalLM of one of quantize.families, in eval mode
    tokenizer: Any  # transformers tokenizer matching the model's vocabulary
    source: ModelSource
    carried_metadata: tuple[CarriedField, ...] | None  # None for a Hugging Face folder


def offline_transformers():
    """Import transformers with the hub switched off: nothing is ever downloaded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    return transformers


@contextlib.contextmanager
def _gguf_parsed_once():
    """transformers parses the GGUF three times (config, tokenizer, weights) and rebuilds gguf's
    tensor-name table for every module; parsing a 49k-token vocabulary and building that table
    dominate a load (about 25 s for SmolLM2-135M). Within this block each file is parsed once and
    each table built once; the results are the same objects transformers would have built."""
    from transformers import modeling_gguf_pytorch_utils as gguf_loading

    original_reader, original_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    original_progress = gguf_loading.tqdm
    readers: dict[tuple, gguf.GGUFReader] = {}

    def reader(path, mode="r"):
        stat = os.stat(path)
        key = (os.fspath(path), mode, stat.st_size, stat.st_mtime_ns)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_name_map)
    gguf_loading.tqdm = functools.partial(original_progress, disable=True)  # its bar is not for users
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_name_map
        gguf_loading.tqdm = original_progress


def read_carried_metadata(path) -> tuple[CarriedField, ...]:
    reader = gguf.GGUFReader(path)  # looked up at call time: parsed once inside _gguf_parsed_once
    carried = []
    for key, field in reader.fields.items():
        if key.startswith(READER_INTERNAL_PREFIX) or key in NOT_COPIED or not field.types:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        carried.append(CarriedField(key, field.contents(), value_type, sub_type))
    return tuple(carried)


def _location(source: ModelSource) -> dict:
    if source.kind == "gguf":
        return {"pretrained_model_name_or_path": str(source.path.parent), "gguf_file": source.path.name}
    return {"pretrained_model_name_or_path": str(source.path)}


def load_tokenizer(source: ModelSource):
    """Only the tokenizer of SRC (for counting tokens), without the weights."""
    transformers = offline_transformers()
    with _gguf_parsed_once():
        return _tokenizer(transformers, source)


def _tokenizer(transformers, source: ModelSource):
    """transformers rebuilds a GGUF's tokenizer from its vocabulary at every load (about 25 s for
    Gemma 3's 262k tokens); the result is kept in the data home's cache, keyed by the file."""
    folder = _tokenizer_cache_folder(source)
    if folder is not None and folder.is_dir():
        with contextlib.suppress(OSError, ValueError):
            return transformers.AutoTokenizer.from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(**_location(source))
    if folder is not None:
        _keep_in_cache(tokenizer, folder)
    return tokenizer


def remember_tokenizer(tokenizer, written: ModelSource) -> None:
    """A GGUF converted from another GGUF carries its tokenizer unchanged: the tokenizer is kept in
    the cache for the written file too, so its first load (a `quantize --imatrix-from` after a
    `convert`) does not rebuild it from the vocabulary."""
    folder = _tokenizer_cache_folder(written)
    if folder is not None and not folder.is_dir():
        _keep_in_cache(tokenizer, folder)


def _keep_in_cache(tokenizer, folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".writing-") as scratch:
            tokenizer.save_pretrained(scratch)
            os.replace(scratch, folder)  # whole or absent: a reader never sees half a tokenizer


def _tokenizer_cache_folder(source: ModelSource):
    if source.kind != "gguf" or source.tokenizer_cache is None:
        return None
    stat = source.path.stat()
    identity = f"{source.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return source.tokenizer_cache / hashlib.sha256(identity.encode()).hexdigest()[:24]


def load_torch_model(source: ModelSource, dtype: str = "float32") -> TorchModel:
    """Load SRC as a torch model in eval mode; raise ConversionError with the reason if it cannot."""
    transformers = offline_transformers()
    import torch

    torch_dtype = getattr(torch, dtype)
    location = _location(source)
    try:
        with _gguf_parsed_once():
            tokenizer = _tokenizer(transformers, source)
            config = transformers.AutoConfig.from_pretrained(**location)
            carried = read_carried_metadata(source.path) if source.kind == "gguf" else None
            if carried is not None:
                complete_config(config, source.family, {field.key: field.value for field in carried})
            model, loading = transformers.AutoModelForCausalLM.from_pretrained(
                **location, config=config, dtype=torch_dtype, output_loading_info=True
            )
    except (ValueError, OSError, KeyError, NotImplementedError, RuntimeError) as exc:
        raise ConversionError(f"transformers could not load {source.path}: {exc}") from None
    _check_every_weight_loaded(source, loading)
    if source.kind == "gguf":
        # The weights are now plain float tensors; the GGUF origin must not follow them into a save.
        with contextlib.suppress(AttributeError):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False  # else Trainer-based tools (TRL) refuse to fine-tune it
    model.eval()
    return TorchModel(model, tokenizer, source, carried)


def _check_every_weight_loaded(source: ModelSource, loading: dict) -> None:
    """transformers starts a parameter the file lacks from random values and only warns; a model
    whose config and weights disagree must be refused instead."""
    missing = [key for key in loading.get("missing_keys", ()) if not key.endswith("rotary_emb.inv_freq")]
    problems = {
        "missing from the weights": missing,
        "of another shape than the config says": [str(item) for item in loading.get("mismatched_keys", ())],
        "not part of the model the config describes": list(loading.get("unexpected_keys", ())),
    }
    for what, keys in problems.items():
        if keys:
            shown = ", ".join(sorted(keys)[:3]) + (" ..." if len(keys) > 3 else "")
            raise ConversionError(
                f"{source.path}: its config and weights disagree: {len(keys)} parameters {what} ({shown})"
            )
