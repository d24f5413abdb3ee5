"""What a twin's settings do on small notes: the same build from the same base with one or more
settings changed (how many passes, which layers, rank, learning rate, sequence length...), and the
held-out perplexity each reaches. The twin's defaults come from here.

Notes: Python's pydoc topics (as in bench_twin.py), Lantern's default settings unless a run
changes them; each run trains until its epoch cap (DEFAULT_EPOCHS unless given), with no time
limit. Held-out perplexity in torch over the first 4,096 held-out tokens and over the whole
held-out split.

Run: .venv/bin/python bench/bench_twin_settings.py [RUN ...]
     where RUN is comma-separated setting=value pairs of TrainingConfig, for example
     max_epochs=1  train_layers=0  sequence_length=512,batch_size=2  rank=64,alpha=128
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_twin import EVAL, WHOLE, lantern_config, train_from_base, write_pydoc_notes  # noqa: E402

from quantize.twin.dataset import build_dataset, heldout_text  # noqa: E402
from quantize.twin.evaluate import torch_perplexity  # noqa: E402
from quantize.twin.training_config import DEFAULT_EPOCHS, TrainingConfig  # noqa: E402

DEFAULT_RUNS = ("max_epochs=1", "max_epochs=1.2", "max_epochs=1.5")


def parse_run(text: str) -> dict:
    """'rank=64,alpha=128' -> {'rank': 64, 'alpha': 128.0}, typed by TrainingConfig's fields."""
    types = {field.name: field.type for field in dataclasses.fields(TrainingConfig)}
    overrides = {}
    for pair in filter(None, text.split(",")):
        name, _, value = pair.partition("=")
        if name not in types:
            raise SystemExit(f"unknown setting {name!r}; settings: {', '.join(types)}")
        kind = types[name]
        # Annotations are strings here ("int | None"): the leading type name decides.
        if kind.startswith("int"):
            overrides[name] = int(value)
        elif kind.startswith("float"):
            overrides[name] = float(value)
        else:
            overrides[name] = value
    overrides.setdefault("max_epochs", DEFAULT_EPOCHS)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="*", default=list(DEFAULT_RUNS))
    args = parser.parse_args()
    runs = [(text, parse_run(text)) for text in args.runs]
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lantern-bench-settings-") as scratch:
        scratch = Path(scratch)
        write_pydoc_notes(scratch / "notes")
        dataset = build_dataset(scratch / "notes")
        text = heldout_text(dataset)
        base = None
        for index, (label, overrides) in enumerate(runs):
            config = lantern_config(None, **overrides)
            torch_model, trainer, state = train_from_base(dataset, config, scratch / f"run-{index}")
            model, tokenizer = trainer.model, torch_model.tokenizer
            heldout = torch_perplexity(model, tokenizer, text, EVAL)[0]
            whole, whole_tokens = torch_perplexity(model, tokenizer, text, WHOLE)
            if base is None:
                with model.disable_adapter():
                    base = (
                        torch_perplexity(model, tokenizer, text, EVAL)[0],
                        torch_perplexity(model, tokenizer, text, WHOLE)[0],
                    )
            last_losses = state.losses[-10:]
            shape = f"{len(trainer.input_ids)} x {config.sequence_length}"
            rows.append((label, shape, state.step, sum(last_losses) / len(last_losses), heldout, whole))
            print(f"{label}: held-out {heldout:.3f} (base {base[0]:.3f}), whole {whole:.3f}", flush=True)
            del torch_model, model, trainer

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"held-out text: first {EVAL.max_tokens} tokens and all {whole_tokens:,}, "
        f"windows of {EVAL.window}, stride {EVAL.stride}"
    )
    print(
        "| settings changed | training sequences x tokens | steps | train loss (last 10 steps) "
        "| held-out ppl | reduction | whole held-out split | reduction |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(f"| base model | - | - | - | {base[0]:.3f} | - | {base[1]:.3f} | - |")
    for label, shape, steps, loss, heldout, whole in rows:
        print(
            f"| {label} | {shape} | {steps} | {loss:.3f} | {heldout:.3f} | {1 - heldout / base[0]:.1%} "
            f"| {whole:.3f} | {1 - whole / base[1]:.1%} |"
        )


if __name__ == "__main__":
    main()
