"""The model families the conversion pipeline handles, and where llama.cpp and transformers differ
on each.

Tensor names and metadata keys come from gguf-py (`gguf.get_tensor_name_map`, `gguf.Keys`), and
transformers reads every one of these families from GGUF. What neither library holds is the short
list of facts below: for each family, how a torch weight must change to become the tensor llama.cpp
computes with (and back), and which settings llama.cpp fixes that transformers leaves open.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

from quantize.errors import ConversionError


@dataclass(frozen=True)
class Family:
    arch: str  # llama.cpp's architecture name, as in general.architecture
    hf_model_type: str  # transformers' config.model_type
    examples: str  # what people call models of this family
    permuted_qk_rows: bool = False  # llama.cpp's llama rope wants Q/K rows interleaved per head
    norm_offset: float = 0.0  # Gemma's norms compute x * (1 + w); llama.cpp stores 1 + w
    moe: bool = False

    @property
    def model_arch(self) -> gguf.MODEL_ARCH:
        return next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == self.arch)

    def tensor_names(self, block_count: int) -> gguf.TensorNameMap:
        """Hugging Face parameter names -> GGUF tensor names for this family (gguf-py's table)."""
        return gguf.get_tensor_name_map(self.model_arch, block_count)


FAMILIES = (
    Family("llama", "llama", "Llama, SmolLM, TinyLlama", permuted_qk_rows=True),
    Family("qwen2", "qwen2", "Qwen2, Qwen2.5"),
    Family("qwen3", "qwen3", "Qwen3"),
    Family("gemma3", "gemma3_text", "Gemma 3 text models", norm_offset=1.0),
    Family("phi3", "phi3", "Phi-3, Phi-4-mini"),
    Family("qwen2moe", "qwen2_moe", "Qwen1.5-MoE, Qwen2-MoE", moe=True),
    Family("qwen3moe", "qwen3_moe", "Qwen3-30B-A3B and other Qwen3 MoE", moe=True),
    # Mixtral is llama.cpp's llama architecture with experts; a file says so only by its expert keys.
    # It comes after the dense llama so that `family_for_arch("llama")` names the dense family;
    # torch models (`lantern moe split` builds one) reach it by model type.
    Family("llama", "mixtral", "Mixtral, Lantern's dense -> MoE splits", permuted_qk_rows=True, moe=True),
)
SUPPORTED_ARCHITECTURES = tuple(dict.fromkeys(family.arch for family in FAMILIES))


def supported_list() -> str:
    # Mixtral's GGUF files are llama files, which transformers cannot read back: not listed as a source.
    return ", ".join(
        f"{family.arch} ({family.examples})" for family in FAMILIES if family.hf_model_type != "mixtral"
    )


def family_for_arch(arch: str, where: str) -> Family:
    """The family of a GGUF architecture; one clear line naming the supported ones otherwise."""
    for family in FAMILIES:
        if family.arch == arch:
            return family
    raise ConversionError(f"{where} is a {arch!r} model; the conversion pipeline handles {supported_list()}")


def family_for_model_type(model_type: str | None, where: str) -> Family:
    for family in FAMILIES:
        if family.hf_model_type == model_type:
            return family
    hint = " (a Gemma 3 vision model: convert its text model)" if model_type == "gemma3" else ""
    raise ConversionError(
        f"{where} holds a {model_type!r} model{hint}; the conversion pipeline handles {supported_list()}"
    )


def check_experts(where: str, expert_count: int | None, experts_used: int | None) -> None:
    if expert_count is None or experts_used is None:
        raise ConversionError(f"{where} is a Mixture-of-Experts model without an expert count; it is damaged")
    if not 0 < experts_used <= expert_count:
        raise ConversionError(
            f"{where} asks for {experts_used} experts per token but has {expert_count}; "
            "experts used must be between 1 and the expert count"
        )
