"""Compile a twin's trained layers before its first build.

Inductor keeps what it compiles on disk (TORCHINDUCTOR_CACHE_DIR), keyed by the graph, its input
shapes and the machine, so a later build of the same base with the same shapes finds it there: its
first step then takes a second or two instead of half a minute of C++ compiling on 2 cores.
`make` runs this once at install for the default base and settings (`lantern twin warm-up`).

One training step on random tokens compiles exactly what a build's first step does (the same
layers, LoRA shapes, precision and loss); its LoRA weights are thrown away.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from quantize.sources import ModelSource
from quantize.torch_bridge import load_torch_model
from quantize.twin.trainer import TwinTrainer, add_lora
from quantize.twin.training_config import TrainingConfig


def warm_up_compiled_layers(base: ModelSource, config: TrainingConfig) -> float:
    """Run one compiled training step of ``config``'s shapes on ``base``; the seconds it took."""
    one_step = dataclasses.replace(config, max_steps=1, max_minutes=None, max_epochs=None, compile="on")
    torch_model = load_torch_model(base)
    peft_model, cut = add_lora(torch_model.model, one_step)
    tokens = torch.randint(
        torch_model.model.config.vocab_size,
        (one_step.batch_size, one_step.sequence_length),
        generator=torch.Generator().manual_seed(one_step.seed),
    )
    with tempfile.TemporaryDirectory(prefix="lantern-warm-up-") as scratch:
        trainer = TwinTrainer(peft_model, cut, tokens.tolist(), one_step, Path(scratch))
        started = time.perf_counter()
        trainer.run()
        return time.perf_counter() - started
