"""What a model costs on a small machine: parameters (total and active per token), experts, and RAM.

Every number comes from the GGUF file's own metadata and tensor table; key and tensor names come
from gguf-py, never spelled here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import gguf

from app.gguf_file import GGUFSummary, open_gguf, summarize_gguf
from app.gguf_header import GGUFHeader

# The routed experts' tensors (ffn_gate_exps, ffn_up_exps, ffn_down_exps, ...): one slice per expert.
# Shared experts (`_shexp`) are not among them: they work on every token.
_EXPERT_TENSORS = frozenset(
    name.rsplit(".", 1)[-1] for name in gguf.TENSOR_NAMES.values() if name.endswith("_exps")
)
_KV_CACHE_BYTES_PER_VALUE = 2  # llama.cpp's default F16 cache


@dataclass(frozen=True)
class ModelFacts:
    """The shape of a model that decides whether it fits: read once from the file, then cached."""

    architecture: str
    parameter_count: int  # every tensor once (a tied output layer is one tensor)
    active_parameter_count: int  # used per token: all but the experts the router leaves idle
    expert_count: int | None  # routed experts per layer; None for a dense model
    expert_used_count: int | None  # experts the router picks per token
    expert_parameter_count: int  # parameters in routed-expert tensors; 0 for a dense model
    block_count: int | None
    kv_head_count: int | None  # the largest per-layer count, when layers differ
    key_length: int | None  # per head
    value_length: int | None
    sliding_window: int | None  # the window of sliding-window layers, if the model has them
    context_length: int | None  # the context the model was trained for
    file_size: int

    @property
    def is_moe(self) -> bool:
        return bool(self.expert_count) and self.expert_parameter_count > 0

    @property
    def expert_share(self) -> float:
        """The routed experts' share of all parameters (0 for a dense model)."""
        return self.expert_parameter_count / self.parameter_count if self.parameter_count else 0.0

    def kv_cache_bytes(self, context_length: int) -> int | None:
        """An upper bound on the F16 K and V cache for ``context_length`` tokens; None if unknown."""
        known = (self.block_count, self.kv_head_count, self.key_length, self.value_length)
        if any(v is None for v in known):
            return None
        per_token = self.kv_head_count * (self.key_length + self.value_length) * _KV_CACHE_BYTES_PER_VALUE
        return self.block_count * context_length * per_token


@dataclass(frozen=True)
class RamEstimate:
    """Memory to run a model at a context: weights (the file, memory-mapped) plus the KV cache.

    An upper bound: every layer is counted with a full-context cache, even sliding-window layers
    that llama.cpp may give a smaller one, and compute buffers are left out.
    """

    context_length: int  # the configured context, capped at the trained one as the engine does
    weights_bytes: int
    kv_cache_bytes: int | None  # None: the architecture's attention shape is not in the file

    @property
    def total_bytes(self) -> int | None:
        return None if self.kv_cache_bytes is None else self.weights_bytes + self.kv_cache_bytes


def estimate_ram(facts: ModelFacts, configured_context: int) -> RamEstimate:
    """RAM at the context the engine would open: ``configured_context``, capped at the trained one."""
    context = configured_context
    if facts.context_length and facts.context_length < context:
        context = facts.context_length
    return RamEstimate(context, facts.file_size, facts.kv_cache_bytes(context))


def facts_from_header(header: GGUFHeader) -> ModelFacts:
    """The facts of a file ``open_gguf`` has checked."""
    arch = header.get(gguf.Keys.General.ARCHITECTURE)

    def number(key: str) -> int | None:
        value = header.get(key.format(arch=arch))
        if isinstance(value, list):  # per-layer values: the largest keeps estimates an upper bound
            value = max(value, default=None)
        return int(value) if value is not None else None

    total = sum(t.n_elements for t in header.tensors)
    experts = sum(t.n_elements for t in header.tensors if _is_expert_tensor(t.name))
    expert_count = number(gguf.Keys.LLM.EXPERT_COUNT)
    expert_used = number(gguf.Keys.LLM.EXPERT_USED_COUNT)
    active = total
    if experts and expert_count and expert_used is not None:
        # Each expert is an equal slice; the router runs `used` of `count` for every token.
        active = total - experts + experts * min(expert_used, expert_count) // expert_count

    head_count = number(gguf.Keys.Attention.HEAD_COUNT)
    embedding = number(gguf.Keys.LLM.EMBEDDING_LENGTH)
    head_dim = embedding // head_count if embedding and head_count else None
    key_length = number(gguf.Keys.Attention.KEY_LENGTH) or head_dim
    value_length = number(gguf.Keys.Attention.VALUE_LENGTH) or head_dim
    kv_heads = number(gguf.Keys.Attention.HEAD_COUNT_KV)
    return ModelFacts(
        architecture=arch,
        parameter_count=total,
        active_parameter_count=active,
        expert_count=expert_count if experts else None,
        expert_used_count=expert_used if experts else None,
        expert_parameter_count=experts,
        block_count=number(gguf.Keys.LLM.BLOCK_COUNT),
        kv_head_count=kv_heads if kv_heads is not None else head_count,  # no GQA key: one per head
        key_length=key_length,
        value_length=value_length,
        sliding_window=number(gguf.Keys.Attention.SLIDING_WINDOW),
        context_length=number(gguf.Keys.LLM.CONTEXT_LENGTH),
        file_size=header.file_size,
    )


def read_model(path: Path) -> tuple[GGUFSummary, ModelFacts]:
    """Check a GGUF file and read its summary and facts from one read of its header."""
    header = open_gguf(path)
    return summarize_gguf(header), facts_from_header(header)


def facts_from_dict(data: object) -> ModelFacts | None:
    """Facts cached in the registry, or None if absent or written by an older Lantern."""
    if not isinstance(data, dict) or set(data) != {f.name for f in dataclasses.fields(ModelFacts)}:
        return None
    return ModelFacts(**data)


def _is_expert_tensor(name: str) -> bool:
    return any(part in _EXPERT_TENSORS for part in name.split("."))  # blk.N.ffn_gate_exps.weight
