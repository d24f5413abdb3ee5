"""LoRA training of the twin: AdamW, warm-up then cosine decay, gradient accumulation, checkpoints
that make Ctrl+C and --resume lose nothing, deterministic for a given --seed and --steps.

Speed on a laptop CPU comes from bf16 matrix products where the CPU has them, a loss that never
holds the vocabulary-wide logits whole (sliced_loss), the trained layers compiled by torch's
inductor with an attention written for it (compile_choice, causal_attention), and training only
the upper layers while the frozen lower ones run once per sequence, the first time it is drawn
(split_model);
bench/bench_twin.py measures each against plain transformers + peft LoRA over every layer.
"""

from __future__ import annotations

import contextlib
import io
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from app.private_files import read_private, write_private
from quantize.cores import usable_cores
from quantize.errors import ConversionError
from quantize.twin import distributed
from quantize.twin.compile_choice import should_compile
from quantize.twin.split_model import SplitModel
from quantize.twin.training_config import TrainingConfig
from rag.crypto import Cipher

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainingProgress:
    step: int
    total_steps: int | None
    loss: float
    learning_rate: float
    tokens_per_second: float
    elapsed_seconds: float
    tokens_seen: int


@dataclass
class TrainingState:
    step: int = 0
    tokens_seen: int = 0
    elapsed_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        """Training tokens per second of training steps (the lower layers' first pass included)."""
        return self.tokens_seen / max(self.elapsed_seconds, 1e-9)

    @property
    def tokens_per_second_after_first_step(self) -> float:
        """The same without the first step, which waits for the compiler and warms the kernels."""
        tokens_per_step = self.tokens_seen / max(self.step, 1)
        later_seconds = self.elapsed_seconds - self.step_seconds[0] if self.step_seconds else 0.0
        return tokens_per_step * max(self.step - 1, 0) / max(later_seconds, 1e-9)


@contextlib.contextmanager
def quiet_library_warnings():
    """peft and transformers warn about things that do not apply here (a GGUF base has no
    config.json to check the vocabulary against; a deprecated name used inside peft)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Could not find a config file.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


class _TrainedPart(torch.nn.Module):
    """The part of a step that runs with gradients, as one module (what DDP wraps): sequence
    indices in, their mean next-token loss out."""

    def __init__(self, trainer: TwinTrainer):
        super().__init__()
        self.model = trainer.model  # registers the LoRA parameters with this module
        self._trainer = [trainer]  # a list, so the trainer is not registered as a submodule

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self._trainer[0].loss_for(indices)


class _StopRequest:
    requested = False


@contextlib.contextmanager
def _stop_at_step_end():
    """While training, the first SIGINT asks for a clean stop; the previous handler comes back at
    once, so a second Ctrl+C interrupts immediately."""
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.getsignal(signal.SIGINT)

    def request(_signum, _frame):
        stop.requested = True
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, request)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def use_bf16(precision: str) -> bool:
    """bfloat16 matrix products pay off only where the CPU has native support for them (AMX or
    AVX512-BF16); "auto" times one product of each kind and picks the faster."""
    if precision in ("bf16", "fp32"):
        return precision == "bf16"
    a, b = torch.randn(512, 576), torch.randn(1536, 576)
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, w = a.to(dtype), b.to(dtype)
        x @ w.T
        started = time.perf_counter()
        for _ in range(10):
            x @ w.T
        timings[dtype] = time.perf_counter() - started
    return timings[torch.bfloat16] < 0.7 * timings[torch.float32]


# transformers stacks each layer's experts in two parameters (gate and up fused, then down).
EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


def _moe_target_modules(model, config: TrainingConfig) -> list[str]:
    """The linear layers of an MoE model to adapt, named in full: given short names such as
    "gate_proj", peft (for transformers v5) would move them onto the stacked experts."""
    chosen = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.rpartition(".")[2] not in config.targets:
            continue
        if ".shared_expert." in name and config.moe_experts == "off":
            continue
        chosen.append(name)
    return chosen


def add_lora(model, config: TrainingConfig):
    """Wrap ``model`` with peft LoRA on the chosen layers; the base weights stay frozen and intact."""
    from peft import LoraConfig, get_peft_model

    layers = model.config.num_hidden_layers
    train_layers = config.layers_to_train(layers)
    window = getattr(model.config, "sliding_window", None)
    local = "sliding_attention" in (getattr(model.config, "layer_types", None) or ())
    if local and window and config.sequence_length > window:
        raise ConversionError(
            f"this model attends locally within {window} tokens; train with --seq-len {window} or less"
        )
    torch.manual_seed(config.seed)
    moe = any(
        getattr(model.config, key, None) for key in ("num_experts", "num_local_experts")
    )  # Qwen, Mixtral
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        target_modules=_moe_target_modules(model, config) if moe else list(config.targets),
        target_parameters=list(EXPERT_PARAMETERS) if moe and config.moe_experts == "all" else None,
        layers_to_transform=list(range(layers - train_layers, layers)),
        lora_dropout=config.lora_dropout,
        bias="none",
    )
    with quiet_library_warnings():
        return get_peft_model(model, lora), layers - train_layers


def checkpoint_bytes(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def read_checkpoint(path: Path, cipher: Cipher | None) -> dict:
    """A checkpoint's contents (sealed in an encrypted home; a damaged one is named)."""
    return torch.load(io.BytesIO(read_private(path, cipher)), weights_only=False)


class TwinTrainer:
    def __init__(
        self,
        peft_model,
        cut: int,
        sequences: list[list[int]],
        config: TrainingConfig,
        checkpoint_dir: Path,
        scaled_groups: list[tuple[list[torch.nn.Parameter], float]] = (),
        cipher: Cipher | None = None,
    ):
        """``scaled_groups``: more parameters to train beyond LoRA's (not checkpointed), each group
        at its own multiple of the learning rate. ``cipher``: the encrypted home's, which seals the
        checkpoint (it holds what was learned from the notes)."""
        if not sequences:
            raise ConversionError(
                f"the notes give fewer than {config.sequence_length} tokens of training text; "
                "add notes or lower --seq-len"
            )
        self.model = peft_model
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir)
        self.cipher = cipher
        self.input_ids = torch.tensor(sequences, dtype=torch.long)
        self.batch_size = min(config.batch_size, len(sequences))
        extra = {id(p) for parameters, _ in scaled_groups for p in parameters}
        lora = [p for p in peft_model.parameters() if p.requires_grad and id(p) not in extra]
        groups = [{"params": lora, "lr_scale": 1.0}]
        groups += [{"params": list(parameters), "lr_scale": scale} for parameters, scale in scaled_groups]
        self.trainable = [p for group in groups for p in group["params"]]
        self.optimizer = torch.optim.AdamW(
            groups, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
        )
        self.state = TrainingState()
        self._lower_cache: dict[int, torch.Tensor] = {}
        self.bf16 = use_bf16(config.precision)
        self.dist = distributed.from_environment()
        compiled = should_compile(config.compile, self.planned_steps, config.max_minutes)
        self.split = SplitModel(peft_model, cut, compiled=compiled)
        self._forward = _TrainedPart(self)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self._forward = DistributedDataParallel(self._forward)  # averages LoRA gradients over gloo

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    # --- data order: a seeded permutation per epoch, so a resumed run sees the same batches ---
    def _batch_indices(self, micro_batch: int) -> torch.Tensor:
        """This process's slice of the micro batch (the whole batch when training alone)."""
        world, rank = self.dist.world_size, self.dist.rank
        per_epoch = max(1, len(self.input_ids) // (self.batch_size * world))
        epoch, within = divmod(micro_batch, per_epoch)
        order = torch.randperm(
            len(self.input_ids), generator=torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        )
        start = (within * world + rank) * self.batch_size
        return order[(start + torch.arange(self.batch_size)) % len(order)]

    def _learning_rate(self) -> float:
        config, step = self.config, self.state.step
        if step < config.warmup_steps:
            return config.learning_rate * (step + 1) / config.warmup_steps
        progress = 0.0
        if self.planned_steps is not None:
            progress = (step - config.warmup_steps) / max(1, self.planned_steps - config.warmup_steps)
        if config.max_minutes is not None:  # the nearer of the two ends sets the decay
            progress = max(progress, self.state.elapsed_seconds / (config.max_minutes * 60))
        return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def _lower_hidden(self, indices: torch.Tensor) -> torch.Tensor:
        """The frozen lower layers' output for these sequences, each computed the first time it
        is drawn and kept by this process: at most one forward pass of the lower layers per
        sequence in all (training alone, all of it in the first epoch; under torchrun a process
        may meet a sequence new to it later), and a budget that ends inside the first epoch never
        runs them on text it does not train on."""
        wanted = indices.tolist()
        missing = sorted({i for i in wanted if i not in self._lower_cache})
        if missing:
            computed = self.split.lower(self.input_ids[missing])
            self._lower_cache.update(zip(missing, computed, strict=True))
        return torch.stack([self._lower_cache[i] for i in wanted])

    def _micro_step(self, indices: torch.Tensor) -> float:
        with self._autocast():
            loss = self._forward(indices)
        (loss / self.config.grad_accum).backward()
        return loss.item()

    def loss_for(self, indices: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of these sequences."""
        ids = self.input_ids[indices]
        hidden = self._lower_hidden(indices) if self.split.cut > 0 else self.split.lower(ids)
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        return self.split.next_token_loss(hidden[:, :-1], ids, dtype)

    @property
    def planned_steps(self) -> int | None:
        """The step count set by --steps or --epochs (the smaller), or None for time alone."""
        limits = []
        if self.config.max_steps is not None:
            limits.append(self.config.max_steps)
        if self.config.max_epochs is not None:
            per_step = self.batch_size * self.config.grad_accum * self.dist.world_size
            limits.append(max(1, math.ceil(self.config.max_epochs * len(self.input_ids) / per_step)))
        return min(limits) if limits else None

    def _done(self) -> bool:
        if self.planned_steps is not None and self.state.step >= self.planned_steps:
            return True
        if self.config.max_minutes is None:
            return False
        # Processes stop together: on the slowest one's clock.
        return self.dist.agree_max(self.state.elapsed_seconds) >= self.config.max_minutes * 60

    def run(self, on_progress: Callable[[TrainingProgress], None] | None = None) -> TrainingState:
        """Train until the step or time budget is spent. Ctrl+C stops at the end of the current
        step, saves a checkpoint and raises KeyboardInterrupt (a second Ctrl+C stops at once)."""
        cores = usable_cores()
        torch.set_num_threads(self.config.threads or max(1, cores // self.dist.world_size))
        self.model.train()
        last_checkpoint = time.monotonic()
        with _stop_at_step_end() as stop:
            while not self._done():
                self.step(on_progress)
                if self.dist.agree_max(stop.requested):
                    self.save_checkpoint()
                    raise KeyboardInterrupt
                if time.monotonic() - last_checkpoint >= self.config.checkpoint_seconds:
                    self.save_checkpoint()
                    last_checkpoint = time.monotonic()
        self.model.eval()
        self.save_checkpoint()
        return self.state

    def step(self, on_progress: Callable[[TrainingProgress], None] | None = None) -> None:
        """One optimizer step (``run`` takes them until the budget is spent)."""
        started = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate() * group.get("lr_scale", 1.0)
        losses = []
        for micro in range(self.config.grad_accum):
            losses.append(
                self._micro_step(self._batch_indices(self.state.step * self.config.grad_accum + micro))
            )
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        tokens = self.config.grad_accum * self.batch_size * self.input_ids.shape[1] * self.dist.world_size
        self.state.step += 1
        self.state.tokens_seen += tokens
        self.state.elapsed_seconds += seconds
        self.state.losses.append(sum(losses) / len(losses))
        self.state.step_seconds.append(seconds)
        if on_progress and self.dist.is_main:
            on_progress(
                TrainingProgress(
                    self.state.step,
                    self.planned_steps,
                    self.state.losses[-1],
                    self.optimizer.param_groups[0]["lr"],
                    tokens / seconds,
                    self.state.elapsed_seconds,
                    self.state.tokens_seen,
                )
            )

    # --- checkpoints ---
    def save_checkpoint(self) -> Path:
        from peft import get_peft_model_state_dict

        path = self.checkpoint_dir / CHECKPOINT
        if not self.dist.is_main:  # every process holds the same weights; one writes them
            self.dist.barrier()
            return path
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        with quiet_library_warnings():
            adapter_weights = get_peft_model_state_dict(self.model)
        payload = {
            "lora": adapter_weights,
            "optimizer": self.optimizer.state_dict(),
            "state": asdict(self.state),
            "config": asdict(self.config),
        }
        write_private(path, checkpoint_bytes(payload), self.cipher)
        self.dist.barrier()
        return path

    def load_checkpoint(self) -> None:
        from peft import set_peft_model_state_dict

        path = self.checkpoint_dir / CHECKPOINT
        if not path.is_file():
            raise ConversionError(f"no checkpoint to resume from in {self.checkpoint_dir}")
        payload = read_checkpoint(path, self.cipher)
        saved = payload["config"]
        settings = ("rank", "alpha", "train_layers", "sequence_length", "batch_size", "seed", "moe_experts")
        mismatched = [key for key in settings if key in saved and saved[key] != getattr(self.config, key)]
        if mismatched:
            raise ConversionError(
                f"the checkpoint was made with other settings ({', '.join(mismatched)}); "
                "resume with the same options, or start over without --resume"
            )
        set_peft_model_state_dict(self.model, payload["lora"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = TrainingState(**payload["state"])
