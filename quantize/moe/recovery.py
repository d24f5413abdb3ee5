"""A short recovery fine-tune of a split model on the calibration notes, bounded by wall-clock time:
the twin's trainer (quantize/twin) with LoRA on attention and on the stacked experts of every layer,
and the routers themselves trainable, on the causal-LM loss.

The model trained is the one that will be written (scaled routers, scaled down projections), and the
adapters are merged into it afterwards, so the file still computes exactly what torch computes. The
routers' logits are tiny in that form; Adam's steps do not depend on the gradient's scale, so their
learning rate is set relative to their weights. With every expert active the routers stay frozen:
their zeros are what makes that split exact. One notes' sequence in ten is held out: if its loss is
not lower after training, the adapters are dropped and the model is left as it was.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from quantize.errors import ConversionError
from quantize.notes_text import NotesRead

SEQUENCE_LENGTH = 256
HELD_OUT_EVERY = 10  # every tenth sequence guards the result
MAX_HELD_OUT = 32  # sequences: enough for a stable loss, quick to score twice
RANK = 8
ROUTER_RELATIVE_STEP = (
    1e-3  # at the peak rate, an Adam step moves a router by this share of its mean |weight|
)


@dataclass(frozen=True)
class RecoveryResult:
    loss_before: float  # on the held-out notes' sequences
    loss_after: float  # of the model as returned (equal to before when the training was dropped)
    steps: int
    kept: bool


def note_sequences(tokenizer, notes: NotesRead, length: int = SEQUENCE_LENGTH) -> list[list[int]]:
    """Every note's tokens, each note ended by EOS, cut into full sequences of ``length``."""
    stream: list[int] = []
    for note in notes.notes:
        stream += tokenizer.encode(note.text, add_special_tokens=False) + [tokenizer.eos_token_id]
    return [stream[i : i + length] for i in range(0, len(stream) - length + 1, length)]


def sequences_loss(model, sequences: list[list[int]]) -> float:
    """Mean next-token cross-entropy over ``sequences``."""
    import torch

    with torch.no_grad():
        losses = [
            float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss) for ids in sequences
        ]
    return sum(losses) / len(losses)


def recover(
    model, tokenizer, notes: NotesRead, minutes: float, seed: int = 0, steps: int | None = None
) -> tuple[object, RecoveryResult]:
    """Train for at most ``minutes`` (or exactly ``steps``: repeatable); returns the model (adapters
    merged) and the held-out losses."""
    from quantize.twin.trainer import TwinTrainer, add_lora
    from quantize.twin.training_config import TrainingConfig

    sequences = note_sequences(tokenizer, notes)
    held = sequences[::HELD_OUT_EVERY][:MAX_HELD_OUT]
    train = [
        ids
        for index, ids in enumerate(sequences)
        if index % HELD_OUT_EVERY or index // HELD_OUT_EVERY >= MAX_HELD_OUT
    ]
    if not held or not train:
        raise ConversionError(
            f"recovery needs at least {2 * SEQUENCE_LENGTH} tokens of notes; give more notes or leave out "
            "--recover-minutes"
        )
    model.eval()
    before = sequences_loss(model, held)
    config = TrainingConfig(
        rank=RANK,
        alpha=2.0 * RANK,
        train_layers=0,  # every layer: the split changed them all
        sequence_length=SEQUENCE_LENGTH,
        max_minutes=None if steps else minutes,
        max_steps=steps,
        moe_experts="all",
        seed=seed,
        compile="off",  # routing gives every step other shapes: the compiler would start over
        checkpoint_seconds=float("inf"),
    )
    routers = [layer.mlp.gate.weight for layer in model.model.layers]
    # Kept to undo a training that did not help (peft's unload is not trusted to undo a LoRA on
    # stacked experts, which it applies as a parametrization of the parameter).
    saved = {key: value.detach().clone() for key, value in model.state_dict().items()}
    peft_model, cut = add_lora(model, config)
    groups = []
    if model.config.num_experts_per_tok < model.config.num_local_experts:
        for weight in routers:
            weight.requires_grad_(True)
            relative = ROUTER_RELATIVE_STEP * float(weight.detach().abs().mean()) / config.learning_rate
            groups.append(([weight], relative))
    with tempfile.TemporaryDirectory(prefix="lantern-moe-recovery-") as scratch:
        trainer = TwinTrainer(peft_model, cut, train, config, Path(scratch), scaled_groups=groups)
        state = trainer.run()
    for weight in routers:
        weight.requires_grad_(False)
    peft_model.eval()
    after = sequences_loss(peft_model, held)
    merged = peft_model.merge_and_unload().eval()
    if after < before:
        return merged, RecoveryResult(before, after, state.step, True)
    merged.load_state_dict(saved)
    return merged, RecoveryResult(before, before, state.step, False)
