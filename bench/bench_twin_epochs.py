"""How long to train a twin on small notes: the same build with its cosine schedule ending after
different numbers of passes over the notes, and the held-out perplexity each reaches.

Notes: Python's pydoc topics (as in bench_twin.py); Lantern's default settings (LoRA rank 16 on the
top 20 layers, lower layers cached, bf16 where faster). The twin's default --epochs comes from here.

Run: .venv/bin/python bench/bench_twin_epochs.py [--epochs 1 1.5 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_twin import EVAL, lantern_config, train_from_base, write_pydoc_notes  # noqa: E402

from quantize.twin.dataset import build_dataset, heldout_text  # noqa: E402
from quantize.twin.evaluate import torch_perplexity  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lantern-bench-epochs-") as scratch:
        scratch = Path(scratch)
        write_pydoc_notes(scratch / "notes")
        dataset = build_dataset(scratch / "notes")
        text = heldout_text(dataset)
        base = None
        for epochs in args.epochs:
            config = lantern_config(None, max_epochs=epochs)
            torch_model, trainer, state = train_from_base(dataset, config, scratch / f"run-{epochs:g}")
            model = trainer.model
            heldout = torch_perplexity(model, torch_model.tokenizer, text, EVAL)[0]
            if base is None:
                with model.disable_adapter():
                    base = torch_perplexity(model, torch_model.tokenizer, text, EVAL)[0]
            last_losses = state.losses[-10:]
            rows.append((epochs, state.step, sum(last_losses) / len(last_losses), heldout))
            sequences = len(trainer.input_ids)
            del torch_model, model, trainer

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"{sequences} training sequences of {config.sequence_length} tokens; held-out text: first "
        f"{EVAL.max_tokens} tokens, windows of {EVAL.window}, stride {EVAL.stride}"
    )
    print("| epochs (cosine ends there) | steps | train loss (last 10 steps) | held-out ppl | reduction |")
    print("|---|---|---|---|---|")
    print(f"| 0 (base) | - | - | {base:.3f} | - |")
    for epochs, steps, loss, heldout in rows:
        print(f"| {epochs:g} | {steps} | {loss:.3f} | {heldout:.3f} | {1 - heldout / base:.1%} |")


if __name__ == "__main__":
    main()
