"""The conversion pipeline on SmolLM2-135M: fidelity of the GGUF -> torch bridge, then size,
perplexity, KL divergence against F16 and decode speed of each quantization, side by side.

The text is the GNU GPL v3 as Debian ships it (/usr/share/common-licenses/GPL-3), a public text on
every Debian machine. All models are measured in one run on the same windows.

Run: .venv/bin/python bench/bench_quantize.py [--max-tokens N] [--text FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.bundled import bundled_model_path  # noqa: E402
from quantize.evaluation import EvalSettings, compare_against  # noqa: E402
from quantize.fidelity import compare_logits  # noqa: E402
from quantize.gguf_export import export_gguf  # noqa: E402
from quantize.quant_types import quant_type  # noqa: E402
from quantize.quantizer import quantize_gguf  # noqa: E402
from quantize.sources import gguf_source  # noqa: E402
from quantize.torch_bridge import load_torch_model  # noqa: E402

TYPES = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--text", type=Path, default=Path("/usr/share/common-licenses/GPL-3"))
    parser.add_argument("--max-tokens", type=int, default=4096)
    args = parser.parse_args()
    bundled = bundled_model_path()
    text = args.text.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="lantern-bench-quant-") as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        torch_model = load_torch_model(gguf_source(bundled, "smollm2"))
        load_s = time.perf_counter() - started
        f16 = scratch / "F16.gguf"
        export_gguf(torch_model, f16, "F16")
        fidelity = {
            "bundled Q4_1 file": compare_logits(torch_model, bundled),
            "F16 export": compare_logits(torch_model, f16),
        }
        del torch_model
        others = [(bundled, "Q4_1 (bundled)")]
        quant_seconds = {}
        for name in TYPES:
            out = scratch / f"{name}.gguf"
            t = time.perf_counter()
            quantize_gguf(f16, True, out, quant_type(name))
            quant_seconds[name] = time.perf_counter() - t
            others.append((out, name))
        settings = EvalSettings(window=512, stride=256, max_tokens=args.max_tokens)
        results = compare_against(f16, "F16", others, text, settings)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"text {args.text} ({results[0].positions} tokens scored, window 512, stride 256)"
    )
    print(f"\nGGUF -> torch load: {load_s:.1f} s")
    print(
        "\n| torch model vs llama.cpp on | positions | top-1 agreement | max abs logit diff | mean abs diff |"
    )
    print("|---|---|---|---|---|")
    for label, f in fidelity.items():
        print(
            f"| {label} | {f.positions} | {f.top1_agreement:.4f} | {f.max_abs_diff:.3f} | "
            f"{f.mean_abs_diff:.4f} |"
        )
    base = results[0].a
    print(
        "\n| type | size MiB | perplexity | KL vs F16 (mean) | KL p99 | top-1 vs F16 | decode tok/s "
        "| quantize s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| F16 | {base.file_size / 2**20:.1f} | {base.perplexity:.3f} | 0 | 0 | 1 | "
        f"{base.decode_tokens_per_second:.1f} | - |"
    )
    for result in results:
        b = result.b
        print(
            f"| {b.name} | {b.file_size / 2**20:.1f} | {b.perplexity:.3f} | {result.kl_divergence:.5f} | "
            f"{result.kl_divergence_p99:.5f} | {result.top1_agreement:.4f} | "
            f"{b.decode_tokens_per_second:.1f} | "
            f"{quant_seconds.get(b.name, float('nan')):.1f} |"
        )


if __name__ == "__main__":
    main()
