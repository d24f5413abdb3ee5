"""One twin build, start to end: notes -> dataset -> torch base + LoRA -> training -> GGUF adapter
(and, on request, a merged model re-quantized to the base's type)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quantize.sources import ModelSource
from quantize.torch_bridge import TorchModel, load_torch_model
from quantize.twin import distributed
from quantize.twin.adapter_export import save_adapter
from quantize.twin.dataset import TwinDataset, build_dataset, pack, save_dataset
from quantize.twin.trainer import TrainingProgress, TrainingState, TwinTrainer, add_lora
from quantize.twin.training_config import TrainingConfig
from rag.crypto import Cipher


def _silent(_message: str) -> None:
    pass


@dataclass(frozen=True)
class TwinBuildResult:
    dataset: TwinDataset
    state: TrainingState
    train_sequences: int
    adapted_matrices: int
    bf16: bool
    processes: int = 1

    @property
    def tokens_per_second(self) -> float:
        return self.state.tokens_per_second


@dataclass
class TwinBuild:
    """What a build keeps in memory after training: the torch twin, for merging and evaluation."""

    torch_model: TorchModel
    peft_model: object
    result: TwinBuildResult


def build_twin(
    notes: Path,
    base: ModelSource,
    twin_dir: Path,
    name: str,
    config: TrainingConfig,
    resume: bool = False,
    say: Callable[[str], None] = print,
    on_progress: Callable[[TrainingProgress], None] | None = None,
    cipher: Cipher | None = None,
) -> TwinBuild:
    """``cipher``: the encrypted home's; the dataset, the checkpoint and the adapter are sealed
    with it as they are written (plain files otherwise)."""
    if not distributed.from_environment().is_main:
        say = _silent  # under torchrun, the first process speaks for all
    dataset = build_dataset(notes, seed=config.seed)
    say(f"Loading the base model {base.name} into torch...")
    torch_model = load_torch_model(base)
    summary = save_dataset(
        dataset, twin_dir / "dataset", torch_model.tokenizer, config.sequence_length, cipher
    )
    train = summary["counts"]["train"]
    say(
        f"Dataset: {train['files']} note files for training ({train['text']} passages, {train['chat']} "
        f"chat samples, {train['tokens']:,} tokens), {len(dataset.heldout.files)} held out"
    )
    sequences = pack(dataset.train.samples, torch_model.tokenizer, config.sequence_length)
    peft_model, cut = add_lora(torch_model.model, config)
    trainer = TwinTrainer(peft_model, cut, sequences, config, twin_dir, cipher=cipher)
    if resume:
        trainer.load_checkpoint()
        say(f"Resuming at step {trainer.state.step} ({trainer.state.tokens_seen:,} tokens trained)")
    precision = "bf16 matrix products" if trainer.bf16 else "fp32"
    if trainer.split.compiled:
        precision += ", layers compiled (at the first step, unless this machine compiled these shapes before)"
    if trainer.dist.enabled:
        precision += f", {trainer.dist.world_size} processes (DDP over gloo)"

    say(
        f"Training LoRA rank {config.rank} on the top {peft_model.config.num_hidden_layers - cut} of "
        f"{peft_model.config.num_hidden_layers} layers, {len(sequences)} sequences of "
        f"{config.sequence_length} tokens, {precision}"
    )
    state = trainer.run(on_progress)
    adapted = 0
    if trainer.dist.is_main:
        adapted = save_adapter(peft_model, twin_dir / "adapter.gguf", name, cipher)
    result = TwinBuildResult(dataset, state, len(sequences), adapted, trainer.bf16, trainer.dist.world_size)
    return TwinBuild(torch_model, peft_model, result)
