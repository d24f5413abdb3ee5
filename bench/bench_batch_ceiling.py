"""How much batching can gain at all, per weight type: llama_decode time for one sequence's token
against four sequences' tokens in one batch (bench_api.decode_ceiling), on the bundled model and on
copies of the same weights re-encoded by llama.cpp's quantizer. The ratio 4 x t1 / t4 is the
ceiling for any scheduler's aggregate throughput at 4 clients over 1.

Run: .venv/bin/python bench/bench_batch_ceiling.py
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_api import decode_ceiling  # noqa: E402

from app.bundled import bundled_model_path  # noqa: E402
from quantize.quant_types import quant_type  # noqa: E402
from quantize.quantizer import quantize_gguf  # noqa: E402

TYPES = ["Q4_0", "Q8_0", "F16"]


def main() -> None:
    bundled = bundled_model_path()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| weights | 1 sequence ms | 4 sequences ms | ceiling 4 x t1 / t4 |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="lantern-ceiling-") as scratch:
        models = [("Q4_1 (bundled)", bundled)]
        for name in TYPES:
            out = Path(scratch) / f"{name}.gguf"
            quantize_gguf(bundled, False, out, quant_type(name))  # requantized from Q4_1: same model
            models.append((f"{name} (from the bundled Q4_1)", out))
        for label, path in models:
            one, four = decode_ceiling(path)
            print(f"| {label} | {one * 1000:.1f} | {four * 1000:.1f} | {4 * one / four:.2f} |", flush=True)


if __name__ == "__main__":
    main()
