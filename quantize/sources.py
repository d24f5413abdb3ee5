"""What `SRC` names on the command line: a model in the store, a GGUF file or a Hugging Face folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.errors import LanternError
from app.gguf_file import GGUFSummary, open_gguf, summarize_gguf
from app.model_store import ModelStore, check_model_name
from quantize.errors import ConversionError
from quantize.families import Family, check_experts, family_for_arch, family_for_model_type
from quantize.gguf_names import Keys, arch_key


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["gguf", "hf"]
    path: Path  # the .gguf file, or the Hugging Face folder
    name: str  # a short name for messages and default output names
    family: Family
    summary: GGUFSummary | None = None  # for GGUF sources, read and checked before anything loads
    tokenizer_cache: Path | None = None  # where the tokenizer read from a GGUF is kept for next time


def resolve_source(text: str, store: ModelStore | None) -> ModelSource:
    """Find SRC: an existing path first, then a store name; check it before any heavy work."""
    path = Path(text).expanduser()
    if path.is_dir():
        return _hf_folder(path)
    cache = store.home.cache_dir / "tokenizers" if store is not None else None
    if path.exists() or text.endswith(".gguf") or "/" in text:
        return dataclasses.replace(gguf_source(path, path.name.removesuffix(".gguf")), tokenizer_cache=cache)
    if store is None:
        raise ConversionError(f"{text!r} is neither a file nor a folder")
    try:
        check_model_name(text)
        entry = store.get(text)
    except LanternError as exc:
        raise ConversionError(f"{text!r} is not a file, a folder or a model in the store: {exc}") from None
    return dataclasses.replace(gguf_source(entry.path, entry.name), tokenizer_cache=cache)


def gguf_source(path: Path, name: str) -> ModelSource:
    header = open_gguf(path)  # refuses truncated, corrupt and empty files with a clear reason
    summary = summarize_gguf(header)
    family = family_for_arch(summary.architecture, str(path))
    if family.moe:

        def number(template: str) -> int | None:
            value = header.get(arch_key(template, family.arch))
            return int(value) if value is not None else None

        check_experts(str(path), number(Keys.LLM.EXPERT_COUNT), number(Keys.LLM.EXPERT_USED_COUNT))
    return ModelSource("gguf", Path(path), name, family, summary)


def _hf_folder(folder: Path) -> ModelSource:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{folder} is a folder without config.json, not a Hugging Face model folder")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{config_path} is not valid JSON ({exc})") from None
    family = family_for_model_type(config.get("model_type"), str(folder))
    if family.moe:
        experts = config.get("num_experts", config.get("num_local_experts"))
        check_experts(str(folder), experts, config.get("num_experts_per_tok"))
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ConversionError(f"{folder} has no weights (*.safetensors)")
    return ModelSource("hf", folder, folder.name, family)
