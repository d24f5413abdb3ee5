"""Preference tuning of a twin with TRL's DPO, on top of its LoRA adapter.

TRL copies the twin's adapter into a frozen "ref" adapter, so the reference policy is the twin as
built (not the bare base model) and the tuned adapter stays a small step from it.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from quantize.errors import ConversionError
from quantize.twin.preferences import DpoPair
from quantize.twin.trainer import quiet_library_warnings


@dataclass(frozen=True)
class DpoSettings:
    steps: int = 20
    learning_rate: float = 5e-5
    beta: float = 0.1
    batch_size: int = 2
    max_length: int = 512
    seed: int = 0


@dataclass(frozen=True)
class DpoReport:
    steps: int
    pairs: int
    first_loss: float | None
    last_loss: float | None
    reward_accuracy: float | None  # share of pairs where the tuned twin prefers the chosen answer


def no_pairs_error() -> ConversionError:
    return ConversionError(
        "no preference pairs yet: rate answers in the TUI (F6/F7, or F9 to write a better one) "
        "or through POST /v1/lantern/feedback; DPO needs a chosen and a rejected answer"
    )


def tune_preferences(
    peft_model, tokenizer, pairs: list[DpoPair], settings: DpoSettings, scratch: Path | None = None
) -> DpoReport:
    """Run DPO steps on ``peft_model`` (its "default" adapter trains); return what was measured.
    ``scratch``: an empty folder for TRL's output (a private one, in an encrypted home); a
    temporary folder by default."""
    if not pairs:
        raise no_pairs_error()
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = [
        {
            "prompt": pair.prompt,
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
        for pair in pairs
    ]
    for parameter_name, parameter in peft_model.named_parameters():
        parameter.requires_grad = ".lora_" in parameter_name and ".default." in parameter_name
    folder = (
        contextlib.nullcontext(scratch) if scratch else tempfile.TemporaryDirectory(prefix="lantern-dpo-")
    )
    with folder as output_dir, quiet_library_warnings():
        config = DPOConfig(
            output_dir=str(output_dir),
            max_steps=settings.steps,
            learning_rate=settings.learning_rate,
            beta=settings.beta,
            per_device_train_batch_size=min(settings.batch_size, len(rows)),
            max_length=settings.max_length,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=settings.seed,
            disable_tqdm=True,
        )
        trainer = DPOTrainer(
            model=peft_model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
        )
        trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    accuracy = [entry[k] for entry in logs for k in entry if k.endswith("rewards/accuracies")]
    peft_model.set_adapter("default")
    if "ref" in peft_model.peft_config:
        peft_model.delete_adapter("ref")
    peft_model.eval()
    return DpoReport(
        steps=trainer.state.global_step,
        pairs=len(pairs),
        first_loss=logs[0]["loss"] if logs else None,
        last_loss=logs[-1]["loss"] if logs else None,
        reward_accuracy=accuracy[-1] if accuracy else None,
    )
