"""Small text helpers shared by the front ends."""

from __future__ import annotations

from app.gguf_file import GGUFSummary


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def describe_model(summary: GGUFSummary | None) -> str:
    if summary is None:
        return "not inspected yet"
    return (
        f"{summary.architecture}, {summary.parameter_count / 1e6:.0f}M parameters, "
        f"{summary.quantization}, {human_bytes(summary.file_size)}"
    )


def format_citations(hits) -> str:
    """'Sources:' and one numbered line per passage the answer could use."""
    from app.memory import cite

    return "Sources:\n" + "\n".join(f"  [{n}] {cite(hit)}" for n, hit in enumerate(hits, start=1))
