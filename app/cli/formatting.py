"""Text the commands print about models and citations."""

from __future__ import annotations

from app.gguf_file import GGUFSummary
from app.memory import cite
from app.sizes import human_bytes
from rag.retrieval import RetrievalHit


def describe_model(summary: GGUFSummary | None) -> str:
    if summary is None:
        return "not inspected yet"
    return (
        f"{summary.architecture}, {summary.parameter_count / 1e6:.0f}M parameters, "
        f"{summary.quantization}, {human_bytes(summary.file_size)}"
    )


def format_citations(hits: list[RetrievalHit]) -> str:
    """'Sources:' and one numbered line per passage the answer could use."""
    return "Sources:\n" + "\n".join(f"  [{n}] {cite(hit)}" for n, hit in enumerate(hits, start=1))
