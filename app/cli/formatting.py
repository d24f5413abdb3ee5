"""Text the commands print about models and citations."""

from __future__ import annotations

from app.gguf_file import GGUFSummary
from app.memory import cite
from app.model_facts import ModelFacts, RamEstimate
from app.sizes import human_bytes, human_count
from rag.retrieval import RetrievalHit


def describe_model(summary: GGUFSummary | None) -> str:
    if summary is None:
        return "not inspected yet"
    return (
        f"{summary.architecture}, {summary.parameter_count / 1e6:.0f}M parameters, "
        f"{summary.quantization}, {human_bytes(summary.file_size)}"
    )


RAM_NOTE = (
    "upper bound: the weights (memory-mapped file) plus an F16 KV cache with every layer at the full "
    "context; sliding-window layers may need less, and compute buffers are not counted"
)


def facts_json(facts: ModelFacts, ram: RamEstimate, brief: bool = False) -> dict:
    """The JSON keys `models list` (brief) and `models info` add about parameters, experts and RAM."""
    data = {
        "architecture": facts.architecture,
        "parameter_count": facts.parameter_count,
        "active_parameter_count": facts.active_parameter_count,
        "moe": facts.is_moe,
        "expert_count": facts.expert_count,
        "expert_used_count": facts.expert_used_count,
        "ram_estimate_bytes": ram.total_bytes,
        "ram_estimate_context_length": ram.context_length,
    }
    if brief:
        return data
    return {
        **data,
        "expert_parameter_count": facts.expert_parameter_count,
        "expert_share": round(facts.expert_share, 6),
        "block_count": facts.block_count,
        "kv_head_count": facts.kv_head_count,
        "key_length": facts.key_length,
        "value_length": facts.value_length,
        "sliding_window": facts.sliding_window,
        "weights_bytes": ram.weights_bytes,
        "kv_cache_bytes": ram.kv_cache_bytes,
        "ram_estimate_note": RAM_NOTE,
    }


def active_rows(facts: ModelFacts) -> list[tuple[str, str]]:
    """`models info` lines on the parameters a token uses; for MoE, also the experts."""
    if not facts.is_moe:
        return [("active per token", "all (a dense model)")]
    active = facts.active_parameter_count
    return [
        ("active per token", f"{human_count(active)} ({active:,})"),
        (
            "experts",
            f"{facts.expert_used_count} of {facts.expert_count} per token; experts hold "
            f"{facts.expert_share:.1%} of the parameters",
        ),
    ]


def describe_ram(ram: RamEstimate) -> str:
    if ram.total_bytes is None:
        return f"unknown (weights {human_bytes(ram.weights_bytes)}; no attention shape in the file)"
    return (
        f"~{human_bytes(ram.total_bytes)} at {ram.context_length} tokens (weights "
        f"{human_bytes(ram.weights_bytes)} + F16 KV cache {human_bytes(ram.kv_cache_bytes)}; an upper bound)"
    )


def format_citations(hits: list[RetrievalHit]) -> str:
    """'Sources:' and one numbered line per passage the answer could use."""
    return "Sources:\n" + "\n".join(f"  [{n}] {cite(hit)}" for n, hit in enumerate(hits, start=1))
