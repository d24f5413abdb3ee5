"""The twin on a public corpus as a user's notes, held-out split by file: Python's pydoc topics
(79 files, read in a few minutes: a twin is limited by the notes) or, with --corpus man, 500 of this
machine's man pages (more than ten minutes can read: a twin is limited by its speed).
Measured side by side in one run:

1. Lantern's twin build (whole command path: dataset, load, training, GGUF adapter)
   in a fixed wall-time budget, ended by the default epoch cap if that comes first, from an empty
   compile cache, and again from a new cache filled by `lantern twin warm-up` (what make runs at
   install, so a user's first twin after `make run` or `make test`). Held-out
   perplexity of the base and of the twin over the first 4,096 held-out tokens, in torch and in
   llama.cpp with the exported adapter on the bundled Q4_1 base, and in torch over the whole
   held-out split; then the merged model, as F16 and re-quantized to Q4_1.
2. Plain transformers + peft LoRA over every layer, fp32, same rank, targets, sequence length,
   batch, learning-rate schedule and epoch cap, within the same wall-time budget; and again
   within the time Lantern's training took (perplexity at equal wall time).
3. Training tokens/s as the speed-ups are added one by one, a few steps each, and one layer's
   attention as transformers runs it (SDPA) and as the twin's compiled layers run it.

Run: .venv/bin/python bench/bench_twin.py [--minutes 10] [--corpus pydoc|man] [--base GGUF]
     (--base: another base model, e.g. Gemma 3 270M; default the bundled SmolLM2-135M;
      --no-warm-build skips 1b, --speedup-steps 0 skips 3.)
     .venv/bin/python bench/bench_twin.py --speedups-only --speedup-steps 12   (3. alone)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pydoc_data.topics import topics  # noqa: E402

import torch  # noqa: E402
from man_notes import write_man_notes  # noqa: E402

from app.bundled import bundled_model_path  # noqa: E402
from quantize.evaluation import EvalSettings, measure_perplexity  # noqa: E402
from quantize.gguf_export import write_gguf  # noqa: E402
from quantize.quant_types import quant_type  # noqa: E402
from quantize.quantizer import quantize_gguf  # noqa: E402
from quantize.sources import gguf_source  # noqa: E402
from quantize.torch_bridge import load_torch_model  # noqa: E402
from quantize.twin.builder import build_twin  # noqa: E402
from quantize.twin.dataset import build_dataset, heldout_text, pack  # noqa: E402
from quantize.twin.evaluate import torch_perplexity  # noqa: E402
from quantize.twin.trainer import TrainingState, TwinTrainer, add_lora  # noqa: E402
from quantize.twin.training_config import DEFAULT_EPOCHS, TrainingConfig  # noqa: E402

EVAL = EvalSettings(window=512, stride=256, max_tokens=4096)
WHOLE = EvalSettings(window=512, stride=256, max_tokens=10**7)  # every held-out note, in torch only


def write_pydoc_notes(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in topics.items():
        (folder / f"{name}.md").write_text(f"# {name}\n\n{text}", encoding="utf-8")


def lantern_config(minutes: float, **overrides) -> TrainingConfig:
    settings = dict(max_minutes=minutes, max_epochs=DEFAULT_EPOCHS)  # the rest: TrainingConfig's defaults
    settings.update(overrides)
    return TrainingConfig(**settings)


class PlainPeftTrainer(TwinTrainer):
    """Plain transformers + peft: the model's own forward and loss (``labels=``) over every layer.
    Data order, optimizer and schedule stay Lantern's, so only the speed-ups differ."""

    def loss_for(self, indices: torch.Tensor) -> torch.Tensor:
        ids = self.input_ids[indices]
        return self.model(input_ids=ids, labels=ids).loss


def fresh_trainer(
    dataset,
    config: TrainingConfig,
    checkpoint_dir: Path,
    trainer_class=TwinTrainer,
    base_path: Path | None = None,
):
    """A fresh base with LoRA, ready to train on ``dataset`` by ``config``: (torch model, trainer)."""
    torch_model = load_torch_model(gguf_source(base_path or bundled_model_path(), "base"))
    sequences = pack(dataset.train.samples, torch_model.tokenizer, config.sequence_length)
    model, cut = add_lora(torch_model.model, config)
    return torch_model, trainer_class(model, cut, sequences, config, checkpoint_dir)


def train_from_base(dataset, config: TrainingConfig, checkpoint_dir: Path, trainer_class=TwinTrainer):
    """A fresh base with LoRA, trained on ``dataset`` by ``config``: (torch model, trainer, state)."""
    torch_model, trainer = fresh_trainer(dataset, config, checkpoint_dir, trainer_class)
    return torch_model, trainer, trainer.run()


@dataclass(frozen=True)
class PlainRun:
    seconds: float  # loading, packing and training
    state: TrainingState
    sequences: int
    heldout: float  # perplexity over the first 4,096 held-out tokens
    whole: float  # over the whole held-out split


def train_plain(dataset, base_path: Path, minutes: float, text: str, checkpoint_dir: Path) -> PlainRun:
    """Plain transformers + peft over every layer, fp32, in ``minutes`` from loading the base."""
    started = time.perf_counter()
    torch_model = load_torch_model(gguf_source(base_path, "base"))
    config = lantern_config(None, train_layers=0, precision="fp32", compile="off")
    sequences = pack(dataset.train.samples, torch_model.tokenizer, config.sequence_length)
    config = replace(config, max_minutes=minutes - (time.perf_counter() - started) / 60)
    model, _ = add_lora(torch_model.model, config)
    state = PlainPeftTrainer(model, 0, sequences, config, checkpoint_dir).run()
    seconds = time.perf_counter() - started
    heldout = torch_perplexity(model, torch_model.tokenizer, text, EVAL)[0]
    whole = torch_perplexity(model, torch_model.tokenizer, text, WHOLE)[0]
    return PlainRun(seconds, state, len(sequences), heldout, whole)


def speedups(
    notes: Path, steps: int, rounds: int = 6, base_path: Path | None = None
) -> list[tuple[str, float]]:
    """Training tokens/s as the speed-ups are added one by one. The configurations take turns, a
    few steps each, so that this machine's drift over minutes falls on all of them alike; each
    one's rate comes from its median step."""
    dataset = build_dataset(notes)
    trainers = []
    for label, trainer_class, layers, precision, compiled in (
        ("plain transformers+peft: every layer, fp32", PlainPeftTrainer, 0, "fp32", "off"),
        ("+ bf16 matrix products", PlainPeftTrainer, 0, "bf16", "off"),
        (
            "+ sliced next-token loss and causal attention (Lantern's own pass over the layers)",
            TwinTrainer,
            0,
            "bf16",
            "off",
        ),
        ("+ layers and loss compiled by inductor", TwinTrainer, 0, "bf16", "on"),
        (
            "+ LoRA on the top 5/6 of the layers, lower layers run once (Lantern)",
            TwinTrainer,
            None,
            "bf16",
            "on",
        ),
    ):
        config = lantern_config(
            None, max_steps=steps + 2, train_layers=layers, precision=precision, compile=compiled
        )
        _, trainer = fresh_trainer(
            dataset, config, notes.parent / f"speedups-{len(trainers)}", trainer_class, base_path
        )
        trainer.model.train()
        for _ in range(2):  # warm-up: the allocator, the kernels, and the compiler
            trainer.step()
        trainers.append((label, trainer))
    per_round = max(1, steps // rounds)
    for _ in range(rounds):
        for _, trainer in trainers:
            for _ in range(per_round):
                trainer.step()
    rows = []
    for label, trainer in trainers:
        seconds = statistics.median(trainer.state.step_seconds[2:])
        rows.append((label, trainer.batch_size * trainer.config.sequence_length / seconds))
    return rows


def attention_timings(repeats: int = 20) -> list[tuple[str, float]]:
    """Milliseconds for one forward and backward of a training step's attention in one layer
    (batch 2, SmolLM2's 9 query and 3 key-value heads of 64, 256 positions), side by side."""
    from transformers.integrations.sdpa_attention import repeat_kv

    from quantize.twin.causal_attention import causal_attention

    def sdpa(query, key, value):
        return torch.nn.functional.scaled_dot_product_attention(
            query, repeat_kv(key, 3), repeat_kv(value, 3), is_causal=True
        )

    def causal(query, key, value):
        return causal_attention(None, query, key, value, None, scaling=64**-0.5)[0]

    rows = []
    for label, attend in (
        ("SDPA (transformers' default), bf16", sdpa),
        ("causal_attention, uncompiled, bf16", causal),
        ("causal_attention, compiled, bf16", torch.compile(causal, dynamic=False)),
    ):
        query, key, value = (
            torch.randn(2, heads, 256, 64, dtype=torch.bfloat16, requires_grad=True) for heads in (9, 3, 3)
        )
        for _ in range(3):
            attend(query, key, value).sum().backward()
        started = time.perf_counter()
        for _ in range(repeats):
            attend(query, key, value).sum().backward()
        rows.append((label, (time.perf_counter() - started) / repeats * 1000))
    return rows


def print_attention(rows: list[tuple[str, float]]) -> None:
    print("\n## One layer's attention, forward and backward (batch 2, 256 positions)")
    print("| attention | ms | vs SDPA |")
    print("|---|---|---|")
    for label, ms in rows:
        print(f"| {label} | {ms:.2f} | {rows[0][1] / ms:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0, help="Wall-time budget of a twin build.")
    parser.add_argument("--speedup-steps", type=int, default=12)
    parser.add_argument("--corpus", choices=("pydoc", "man"), default="pydoc")
    parser.add_argument("--speedups-only", action="store_true", help="Only the speed-ups table.")
    parser.add_argument("--base", type=Path, help="A base GGUF other than the bundled SmolLM2-135M.")
    parser.add_argument(
        "--no-warm-build", action="store_true", help="Skip the second build after make's warm-up (1b)."
    )
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    # A fresh compile cache: Lantern's build pays the compiler as on a machine's first twin.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lantern-bench-inductor-")
    if args.speedups_only:
        with tempfile.TemporaryDirectory(prefix="lantern-bench-twin-") as scratch:
            write_pydoc_notes(Path(scratch) / "notes")
            rows = speedups(Path(scratch) / "notes", args.speedup_steps, base_path=args.base)
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; notes: pydoc"
        )
        print_speedups(rows, args.speedup_steps)
        print_attention(attention_timings())
        return
    base_path = args.base or bundled_model_path()
    base_name = base_path.name if args.base else "SmolLM2-135M"
    with tempfile.TemporaryDirectory(prefix="lantern-bench-twin-") as scratch:
        scratch = Path(scratch)
        notes = scratch / "notes"
        if args.corpus == "man":
            write_man_notes(notes)
        else:
            write_pydoc_notes(notes)
        dataset = build_dataset(notes)
        text = heldout_text(dataset)

        # 1. Lantern's build, within the budget: the training gets what loading and export leave.
        started = time.perf_counter()
        build_overhead_estimate = 1.5  # minutes: load, dataset, export (measured below)
        config = lantern_config(args.minutes - build_overhead_estimate)
        build = build_twin(notes, gguf_source(base_path, "base"), scratch / "twin", "bench-twin", config)
        build_seconds = time.perf_counter() - started
        result = build.result
        tokenizer = build.torch_model.tokenizer
        twin_torch = torch_perplexity(build.peft_model, tokenizer, text, EVAL)[0]
        twin_whole, whole_tokens = torch_perplexity(build.peft_model, tokenizer, text, WHOLE)
        with build.peft_model.disable_adapter():
            base_torch = torch_perplexity(build.peft_model, tokenizer, text, EVAL)[0]
            base_whole = torch_perplexity(build.peft_model, tokenizer, text, WHOLE)[0]
        adapter = scratch / "twin" / "adapter.gguf"
        base_llama = measure_perplexity(base_path, "base", text, EVAL, speed=False).perplexity
        twin_eval = EvalSettings(window=512, stride=256, max_tokens=4096, lora_path=str(adapter))
        twin_llama = measure_perplexity(base_path, "twin", text, twin_eval, speed=False).perplexity
        merged = build.peft_model.merge_and_unload()
        f16, q41 = scratch / "merged-f16.gguf", scratch / "merged-q4_1.gguf"
        write_gguf(merged, f16, "F16", carried=build.torch_model.carried_metadata)
        quantize_gguf(f16, True, q41, quant_type("Q4_1"))
        merged_f16_llama = measure_perplexity(f16, "merged-f16", text, EVAL, speed=False).perplexity
        merged_llama = measure_perplexity(q41, "merged", text, EVAL, speed=False).perplexity
        del build, merged

        # 1b. The same build as a user's first after `make`: a new, empty compile cache that
        # `lantern twin warm-up` fills (its own process, as make runs it). This process's memory
        # of the compiled layers is dropped first, so that it compiles as a new process would.
        warm_state = None
        if not args.no_warm_build:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lantern-bench-inductor-")
            warm_up_seconds = run_install_warm_up(scratch / "home", args.base)
            torch._dynamo.reset()
            started = time.perf_counter()
            warm = build_twin(
                notes, gguf_source(base_path, "base"), scratch / "twin-warm", "bench-warm", config
            )
            warm_seconds = time.perf_counter() - started
            warm_torch = torch_perplexity(warm.peft_model, tokenizer, text, EVAL)[0]
            warm_state = warm.result.state
            del warm

        # 2. Plain transformers + peft, every layer, fp32: in the same budget, and in the time
        # Lantern's training took (equal wall time, with its schedule fitted to that time).
        plain = train_plain(dataset, base_path, args.minutes, text, scratch / "plain")
        plain_equal = train_plain(
            dataset, base_path, result.state.elapsed_seconds / 60, text, scratch / "plain-equal"
        )

        rows = speedups(notes, args.speedup_steps, base_path=base_path) if args.speedup_steps else []

    counts = dataset.counts()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}; notes: {args.corpus}, {counts['train']['files']} train files, "
        f"{counts['heldout']['files']} held-out files; held-out text scored in windows of 512, stride 256"
    )
    print(f"\n## Twin build in {args.minutes:g} minutes")
    epoch_tokens = plain.sequences * config.sequence_length
    print(
        "| | wall s | steps | epochs | train tok/s | held-out ppl (torch) | reduction | "
        f"whole held-out split ({whole_tokens:,} tokens) | reduction |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| base {base_name} | - | - | - | - | {base_torch:.3f} | - | {base_whole:.3f} | - |")
    lantern_epochs = result.state.tokens_seen / epoch_tokens
    print(
        f"| Lantern twin, first build, empty compile cache | {build_seconds:.0f} | {result.state.step} | "
        f"{lantern_epochs:.2f} | "
        f"{result.tokens_per_second:.0f} | {twin_torch:.3f} | {1 - twin_torch / base_torch:.1%} | "
        f"{twin_whole:.3f} | {1 - twin_whole / base_whole:.1%} |"
    )
    if warm_state:
        print(
            f"| Lantern twin, first build after make's warm-up | {warm_seconds:.0f} | {warm_state.step} | "
            f"{warm_state.tokens_seen / epoch_tokens:.2f} | {warm_state.tokens_per_second:.0f} | "
            f"{warm_torch:.3f} | {1 - warm_torch / base_torch:.1%} | - | - |"
        )
    for label, run in (
        ("plain transformers+peft", plain),
        ("plain, for Lantern's training time", plain_equal),
    ):
        print(
            f"| {label} | {run.seconds:.0f} | {run.state.step} | "
            f"{run.state.tokens_seen / epoch_tokens:.2f} | {run.state.tokens_per_second:.0f} | "
            f"{run.heldout:.3f} | "
            f"{1 - run.heldout / base_torch:.1%} | {run.whole:.3f} | {1 - run.whole / base_whole:.1%} |"
        )
    plain_rate = plain.state.tokens_per_second
    print(
        f"\nLantern's tokens/s include the lower layers' first pass and its first step "
        f"({result.state.step_seconds[0]:.1f} s, compiling the layers from a cold cache); "
        f"bf16 products: {result.bf16}"
    )
    print(f"Train tokens/s, Lantern / plain: {result.tokens_per_second / plain_rate:.2f} (target >= 2)")
    if warm_state:
        print(
            f"First build after make's warm-up ({warm_up_seconds:.0f} s at install; first step "
            f"{warm_state.step_seconds[0]:.1f} s): {warm_state.tokens_per_second / plain_rate:.2f}x plain"
        )
    lantern_after = result.state.tokens_per_second_after_first_step
    plain_after = plain.state.tokens_per_second_after_first_step
    print(
        f"After the first step (the compiler's, and each side's warm-up): Lantern {lantern_after:.0f}, "
        f"plain {plain_after:.0f} tokens/s, {lantern_after / plain_after:.2f}x"
    )
    print(f"\n## Through llama.cpp ({base_path.name} as the base)")
    print("| model | held-out ppl | vs torch twin |")
    print("|---|---|---|")
    print(f"| base | {base_llama:.3f} | - |")
    print(
        f"| base + twin adapter (GGUF LoRA) | {twin_llama:.3f} | "
        f"{twin_llama / twin_torch - 1:+.2%} (target within 2%) |"
    )
    print(f"| merged twin, F16 | {merged_f16_llama:.3f} | {merged_f16_llama / twin_torch - 1:+.2%} |")
    print(
        f"| merged twin, re-quantized to Q4_1 | {merged_llama:.3f} | {merged_llama / twin_torch - 1:+.2%} |"
    )
    print(f"reduction through llama.cpp with the adapter: {1 - twin_llama / base_llama:.1%} (target >= 35%)")
    if rows:
        print_speedups(rows, args.speedup_steps)
        print_attention(attention_timings())


def run_install_warm_up(home: Path, base: Path | None = None) -> float:
    """`lantern twin warm-up` as make runs it at install, into $TORCHINDUCTOR_CACHE_DIR; its seconds."""
    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("lantern")), "twin", "warm-up"]
        + (["--base", str(base)] if base else []),
        env={**os.environ, "LANTERN_HOME": str(home)},
        check=True,
    )
    return time.perf_counter() - started


def print_speedups(rows: list[tuple[str, float]], steps: int) -> None:
    print(
        f"\n## Speed-ups added one by one (training tokens/s from the median of {steps} steps each, "
        f"taken in turns; rank {TrainingConfig.rank}, seq {TrainingConfig.sequence_length}, "
        f"batch {TrainingConfig.batch_size})"
    )
    print("| configuration | tokens/s | vs plain |")
    print("|---|---|---|")
    for label, rate in rows:
        print(f"| {label} | {rate:.0f} | {rate / rows[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
