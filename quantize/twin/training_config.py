"""What a twin's training is told: the settings a build, a resume and the benchmarks share.
Free of torch, so the command line can show defaults without loading it."""

from __future__ import annotations

from dataclasses import dataclass

from quantize.errors import ConversionError

# Where held-out perplexity bottoms out on small notes in batches of 2, measured on a held-out split
# that shares no paragraph with training (bench/RESULTS.md, pydoc without leaks: 0.6, 0.8, 1.0 and
# 1.2 passes): past one pass the twin memorises its notes and gets worse on unseen ones.
DEFAULT_EPOCHS = 1.0
# Attention and dense MLP matrices of every family (Phi-3 fuses q/k/v and gate/up). A Mixture-of-
# Experts router (`mlp.gate`) matches none of them: it stays frozen.
LORA_TARGETS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "qkv_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "gate_up_proj",
    "down_proj",
)
# On Mixture-of-Experts models: LoRA on no expert, on the shared expert only, or on every expert too.
MOE_EXPERT_CHOICES = ("off", "shared", "all")


@dataclass(frozen=True)
class TrainingConfig:
    rank: int = 16
    alpha: float = 32.0
    # LoRA on the top N layers; 0 means every layer (no caching); None all but the lowest sixth. The
    # top 25 of SmolLM2's 30 score about as every layer does on held-out notes (bench/RESULTS.md),
    # and the 5 below run once.
    train_layers: int | None = None
    sequence_length: int = 256
    # Batches of 2 beat 4 on small notes: twice the updates for the same passes (bench/RESULTS.md).
    batch_size: int = 2
    grad_accum: int = 1
    # On held-out notes that share nothing with training, 1.5e-3 beats 3e-3 by 1.6 points (2.9 over
    # the whole split) and 5e-3 by 10 (bench/RESULTS.md): a faster rate fits the training notes.
    learning_rate: float = 1.5e-3
    weight_decay: float = 0.0
    lora_dropout: float = 0.0
    warmup_steps: int = 10
    max_steps: int | None = None
    max_minutes: float | None = None
    max_epochs: float | None = None  # a time budget is also capped in epochs (see DEFAULT_EPOCHS)
    seed: int = 0
    threads: int = 0
    checkpoint_seconds: float = 60.0
    targets: tuple[str, ...] = LORA_TARGETS
    moe_experts: str = "shared"
    precision: str = "auto"  # "bf16": matrix products in bfloat16 (autocast); "fp32"; "auto": measured
    compile: str = "auto"  # compile the trained layers: "on", "off", "auto" (see compile_choice)

    def layers_to_train(self, layers: int) -> int:
        """How many of a model's ``layers`` (the top ones) get LoRA."""
        if self.train_layers is None:
            return layers - layers // 6
        chosen = self.train_layers or layers
        if not 0 < chosen <= layers:
            raise ConversionError(f"--train-layers must be between 1 and {layers} for this model")
        return chosen

    def __post_init__(self):
        if self.max_steps is None and self.max_minutes is None and self.max_epochs is None:
            raise ConversionError("give the training a length: --steps N, --minutes M or --epochs E")
        if self.max_epochs is not None and self.max_epochs <= 0:
            raise ConversionError("--epochs must be more than 0")
        if self.moe_experts not in MOE_EXPERT_CHOICES:
            raise ConversionError(f"--moe-experts must be one of {', '.join(MOE_EXPERT_CHOICES)}")
        if self.rank < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConversionError("--rank, batch size and gradient accumulation must be at least 1")
