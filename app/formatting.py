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
