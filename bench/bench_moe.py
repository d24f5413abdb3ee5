"""Mixture-of-Experts for small machines, measured side by side in one run:

1. Dense -> MoE: SmolLM2-135M's feed-forward blocks split into 8 experts, top-2 (`lantern moe
   split`, calibrated on the train side of Python's pydoc topics), before and after a recovery
   fine-tune. Dense and MoE are each quantized to every type below; for each model and type:
   decode tokens/s in llama.cpp (rounds taking turns, median), peak RSS of the process that loads
   and decodes, file size, and perplexity on held-out pydoc notes (never used for calibration)
   and on general text (the GNU GPL v3). The headline ratio is each model at its fastest type.
2. Pruning that MoE to 50% of its experts, REAP against frequency (`lantern moe prune`), and a
   tiny random Qwen3-MoE pruned the same way: file size, peak RSS, perplexity on both texts.
3. Gemma 3 270M: what `lantern moe split` says about it.

Every model is built through the `lantern` command line in a scratch data home, as a user would.

Run: .venv/bin/python bench/bench_moe.py [--recover-minutes 10] [--rounds 3] [--max-tokens 4096]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_families import small_tokenizer, tiny_moe  # noqa: E402
from bench_twin import write_pydoc_notes  # noqa: E402

from quantize.evaluation import EvalSettings, measure_perplexity  # noqa: E402

LANTERN = Path(sys.executable).with_name("lantern")
GPL = Path("/usr/share/common-licenses/GPL-3")
TYPES = ["F16", "Q8_0", "Q4_1", "Q4_0", "Q4_K_M"]
DECODE_TOKENS = 64


def lantern(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "LANTERN_HOME": str(home)}
    done = subprocess.run([str(LANTERN), *args], capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise SystemExit(f"lantern {' '.join(args)} failed:\n{done.stderr}")
    return done


def model_path(home: Path, name: str) -> Path:
    facts = json.loads(lantern(home, "models", "info", name, "--json").stdout)
    return Path(facts["path"])


def split_notes(folder: Path, calibration: Path, heldout_every: int = 5) -> str:
    """Every fifth pydoc topic (by sorted name) is held out; the rest is the calibration folder.
    Returns the held-out text."""
    calibration.mkdir(parents=True)
    heldout = []
    for index, path in enumerate(sorted(folder.glob("*.md"))):
        if index % heldout_every == 0:
            heldout.append(path.read_text(encoding="utf-8"))
        else:
            shutil.copy(path, calibration / path.name)
    return "\n\n".join(heldout)


# Run in a fresh interpreter that imports llama_cpp alone, so its peak RSS (VmHWM, which a new
# program starts afresh, unlike getrusage's maximum) is the model's and the runtime's, not torch's.
PROBE = """
import json, sys, time
import llama_cpp
import numpy as np
path, threads, count, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=threads, use_mmap=True, verbose=False)
llm.eval(llm.tokenize(prompt.encode(), add_bos=True)[:32])
started = time.perf_counter()
for _ in range(count):
    llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
rate = count / (time.perf_counter() - started)
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rate": rate, "peak_rss": peak}))
"""


def decode_probe(path: Path, threads: int, prompt: str) -> tuple[float, int]:
    """Decode tokens/s and the peak RSS (bytes) of a fresh process that loads ``path`` and decodes."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), str(threads), str(DECODE_TOKENS), prompt],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["rate"], result["peak_rss"]


@dataclass
class Row:
    label: str
    path: Path
    rates: list[float]
    peak_rss: int = 0
    domain_ppl: float = 0.0
    general_ppl: float = 0.0

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


def measure(rows: list[Row], rounds: int, threads: int, prompt: str, texts: dict[str, str], settings) -> None:
    for _ in range(rounds):  # the models take turns, so a slow minute costs every one alike
        for row in rows:
            rate, rss = decode_probe(row.path, threads, prompt)
            row.rates.append(rate)
            row.peak_rss = max(row.peak_rss, rss)
    for row in rows:
        row.domain_ppl = measure_perplexity(
            row.path, row.label, texts["domain"], settings, speed=False
        ).perplexity
        row.general_ppl = measure_perplexity(
            row.path, row.label, texts["general"], settings, speed=False
        ).perplexity


def oracle_ceiling(dense: Path, calibration: Path, text: str, max_tokens: int) -> list[tuple[str, float]]:
    """Held-out perplexity in torch when an oracle, not a router, picks each token's experts (those
    whose outputs are largest): what a perfect router could reach with the split's partition. Also
    the partition as first written (neurons clustered by activation magnitude) and, as the bound of
    any grouping, each token's own best quarter of the neurons."""
    import numpy as np
    import torch

    from quantize.moe.calibration import calibrate
    from quantize.moe.neuron_partition import _balanced_assignment, partition_neurons, swiglu_hidden
    from quantize.notes_text import read_notes
    from quantize.sources import gguf_source
    from quantize.torch_bridge import load_torch_model

    loaded = load_torch_model(gguf_source(dense, "dense"))
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    found = calibrate(model, tokenizer, read_notes(calibration), 8192, 512)
    layers = model.model.layers
    hidden = [swiglu_hidden(layer.mlp, found.ffn_inputs[i]) for i, layer in enumerate(layers)]
    downs = [layer.mlp.down_proj.weight.detach().float() for layer in layers]

    def magnitude_partition(h, experts: int) -> np.ndarray:  # the first version, for comparison
        profile = np.abs(h.numpy())[:4096].T
        features = profile / (np.linalg.norm(profile, axis=1, keepdims=True) + 1e-12)
        rng = np.random.default_rng(0)
        centroids = features[rng.choice(len(features), experts, replace=False)]
        for _ in range(10):
            assignment = _balanced_assignment(features @ centroids.T, len(features) // experts)
            for e in range(experts):
                centre = features[assignment == e].mean(axis=0)
                centroids[e] = centre / (np.linalg.norm(centre) + 1e-12)
        return np.stack([np.flatnonzero(assignment == e) for e in range(experts)])

    rule: dict = {}

    def patched(index: int, mlp):
        dense_forward = mlp.forward

        def forward(x):
            if not rule:
                return dense_forward(x)
            flat = x.reshape(-1, x.shape[-1])
            h = torch.nn.functional.silu(mlp.gate_proj(flat)) * mlp.up_proj(flat)
            if "neurons" in rule:
                score = h.abs() * downs[index].norm(dim=0)
                keep = score.topk(int(h.shape[1] * rule["neurons"]), dim=1).indices
                return mlp.down_proj(h * torch.zeros_like(h).scatter_(1, keep, 1.0)).reshape(x.shape)
            outputs = torch.stack([h[:, n] @ downs[index][:, n].T for n in rule["partitions"][index]], 1)
            chosen = outputs.norm(dim=2).topk(rule["top_k"], dim=1).indices
            mask = torch.zeros(outputs.shape[:2]).scatter_(1, chosen, 1.0)
            return (outputs * mask[..., None]).sum(1).reshape(x.shape)

        return forward

    for index, layer in enumerate(layers):
        layer.mlp.forward = patched(index, layer.mlp)
    ids = tokenizer.encode(text, add_special_tokens=False)[:max_tokens]

    def perplexity() -> float:
        nll, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(ids) - 1, 512):
                window = torch.tensor([ids[start : start + 512]])
                if window.shape[1] < 2:
                    break
                nll += float(model(input_ids=window, labels=window).loss) * (window.shape[1] - 1)
                count += window.shape[1] - 1
        return math.exp(nll / count)

    rows = [("dense", perplexity())]
    for top_k in (2, 4):
        rule.update(
            top_k=top_k,
            partitions=[partition_neurons(h, d, 8, top_k) for h, d in zip(hidden, downs, strict=True)],
        )
        rows.append((f"oracle top-{top_k} of 8, on/off co-activation partition (Lantern's)", perplexity()))
    rule.update(top_k=2, partitions=[magnitude_partition(h, 8) for h in hidden])
    rows.append(("oracle top-2 of 8, magnitude-profile partition (first version)", perplexity()))
    rule.clear()
    rule["neurons"] = 0.25
    rows.append(("each token's own best 25% of neurons (no grouping)", perplexity()))
    return rows


def mib(size: int) -> str:
    return f"{size / 2**20:.1f}"


def print_table(rows: list[Row], dense_ppl: tuple[float, float] | None = None) -> None:
    print("| model | file MiB | decode tok/s | peak RSS MiB | held-out pydoc ppl | GPL-3 ppl |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.label} | {mib(row.path.stat().st_size)} | {row.rate:.1f} | {mib(row.peak_rss)} | "
            f"{row.domain_ppl:.3f} | {row.general_ppl:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recover-minutes", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    settings = EvalSettings(window=512, stride=256, max_tokens=args.max_tokens)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"# bench_moe — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}, "
        f"{platform.machine()} {os.cpu_count()} cores, {args.threads} threads"
    )
    with tempfile.TemporaryDirectory(prefix="lantern-bench-moe-") as scratch:
        scratch = Path(scratch)
        home = scratch / "home"
        write_pydoc_notes(scratch / "pydoc")
        texts = {
            "domain": split_notes(scratch / "pydoc", scratch / "calibration"),
            "general": GPL.read_text(encoding="utf-8"),
        }
        calibration = str(scratch / "calibration")
        prompt = texts["general"][:400]

        # Quick ones first. 2b: pruning a tiny random Qwen3-MoE (its perplexities are those of random
        # weights, so only the change from pruning means anything).
        tiny = scratch / "tiny-qwen3moe"
        tokenizer = small_tokenizer(tiny)
        tiny_moe("qwen3moe", tokenizer).save_pretrained(tiny)
        lantern(home, "convert", str(tiny), "--name", "tiny-F16")
        tiny_rows = pruned_rows(home, "tiny-F16", "tiny Qwen3-MoE F16 (8 experts)", calibration)
        measure(tiny_rows, args.rounds, args.threads, prompt, texts, settings)
        print("\n## Pruning a tiny random Qwen3-MoE (4 layers, width 256) to 50% of its experts\n")
        print_table(tiny_rows)

        # 3. Gemma 3 270M.
        gemma = lantern(
            home, "moe", "split", "gemma3-270m", "--experts", "8", "--top-k", "2",
            "--calibrate", calibration, check=False,
        )  # fmt: skip
        print("\n## Gemma 3 270M\n")
        print(f"`lantern moe split gemma3-270m ...` -> exit {gemma.returncode}: {gemma.stderr.strip()}")

        lantern(home, "convert", "smollm2-135m-instruct", "--name", "dense-F16")
        timings = {}
        for name, minutes in (("moe-norecovery", 0.0), ("moe", args.recover_minutes)):
            started = time.perf_counter()
            done = lantern(
                home, "moe", "split", "dense-F16", "--experts", "8", "--top-k", "2",
                "--calibrate", calibration, "--recover-minutes", str(minutes), "--name", f"{name}-F16",
            )  # fmt: skip
            timings[name] = time.perf_counter() - started
            print(f"\n`lantern moe split ... --recover-minutes {minutes:g}` ({timings[name]:.0f} s):\n")
            print("```\n" + done.stderr.strip() + "\n" + done.stdout.strip() + "\n```")
        for base in ("dense", "moe"):
            for qtype in TYPES[1:]:
                lantern(home, "quantize", f"{base}-F16", "--type", qtype, "--name", f"{base}-{qtype}")

        # 0. The ceiling the partition sets, whatever the router.
        ceiling = oracle_ceiling(
            model_path(home, "dense-F16"), scratch / "calibration", texts["domain"], 2048
        )
        print("\n## What a perfect router could reach (torch, held-out pydoc, 2,048 tokens)\n")
        print("| FFN computed as | perplexity |\n|---|---:|")
        for label, value in ceiling:
            print(f"| {label} | {value:.2f} |")

        # 1. Dense against MoE at every type.
        split_rows = [
            Row(f"{base} {qtype}", model_path(home, f"{base}-{qtype}"), [])
            for qtype in TYPES
            for base in ("dense", "moe")
        ]
        split_rows.append(Row("moe F16, no recovery", model_path(home, "moe-norecovery-F16"), []))
        measure(split_rows, args.rounds, args.threads, prompt, texts, settings)
        print("\n## Dense -> MoE (SmolLM2-135M, 8 experts, top-2)\n")
        print_table(split_rows)
        dense = max((r for r in split_rows if r.label.startswith("dense")), key=lambda r: r.rate)
        moe = max(
            (r for r in split_rows if r.label.startswith("moe") and "no recovery" not in r.label),
            key=lambda r: r.rate,
        )
        change = _ppl(split_rows, "moe F16") / _ppl(split_rows, "dense F16") - 1
        print(
            f"\nFastest dense: {dense.label} {dense.rate:.1f} tok/s; fastest MoE: {moe.label} "
            f"{moe.rate:.1f} tok/s -> MoE / dense {moe.rate / dense.rate:.2f}x (goal 1.4x). Held-out "
            f"pydoc perplexity at F16: {change:+.1%} against dense (goal +10%)."
        )

        # 2. Pruning to 50% of the experts.
        prune_rows = pruned_rows(home, "moe-F16", "moe F16 (8 experts)", calibration)
        measure(prune_rows, args.rounds, args.threads, prompt, texts, settings)
        print("\n## Pruning the split SmolLM2 to 50% of its experts\n")
        print_table(prune_rows)


def pruned_rows(home: Path, source: str, label: str, calibration: str) -> list[Row]:
    """The model and its halves pruned by REAP and by frequency on the calibration notes."""
    rows = [Row(label, model_path(home, source), [])]
    for method in ("reap", "frequency"):
        pruned = f"{source}-{method}"
        lantern(
            home, "moe", "prune", source, "--calibrate", calibration, "--keep", "0.5",
            "--method", method, "--name", pruned,
        )  # fmt: skip
        rows.append(Row(f"pruned to 4, {method}", model_path(home, pruned), []))
    return rows


def _ppl(rows: list[Row], label: str) -> float:
    return next(r.domain_ppl for r in rows if r.label == label)


if __name__ == "__main__":
    main()
