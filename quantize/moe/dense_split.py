"""Dense -> Mixture-of-Experts, start to end: check the request, read the notes through the dense
model, partition every feed-forward block, train the routers, build the split model and, if asked,
recover it. Writing the file is the caller's (it owns the atomic output)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quantize.errors import ConversionError
from quantize.moe.calibration import calibrate
from quantize.moe.moefied_model import build_moe_model, check_splittable, written_router
from quantize.moe.neuron_partition import partition_neurons, swiglu_hidden
from quantize.moe.recovery import RecoveryResult, recover
from quantize.moe.router_training import expert_importance, train_router
from quantize.notes_text import NotesRead


@dataclass(frozen=True)
class SplitRequest:
    experts: int
    top_k: int
    recover_minutes: float = 0.0
    recover_steps: int | None = None  # instead of minutes: the same training on every machine
    max_tokens: int = 8192
    window: int = 512
    seed: int = 0


@dataclass(frozen=True)
class SplitResult:
    model: object  # the MixtralForCausalLM, exactly what is to be written
    router_recall: tuple[float, ...]  # per layer, held-out share of the oracle's top-K picked
    calibration_tokens: int
    parameters: int
    active_parameters: int  # per token: all but the experts the router leaves idle
    recovery: RecoveryResult | None


def check_counts(request: SplitRequest) -> None:
    """The numbers asked for, checked before anything is loaded."""
    n, k = request.experts, request.top_k
    if n < 2:
        raise ConversionError(f"--experts {n}: a Mixture-of-Experts needs at least 2 experts")
    if not 1 <= k <= n:
        raise ConversionError(
            f"--top-k {k}: the experts used per token must be between 1 and --experts ({n})"
        )
    if request.recover_minutes < 0:
        raise ConversionError("--recover-minutes cannot be negative")


def check_request(config, request: SplitRequest) -> None:
    """One clear reason for any split this model cannot take, before any heavy work."""
    check_counts(request)
    check_splittable(config)
    n, width = request.experts, config.intermediate_size
    if width % n:
        raise ConversionError(
            f"the feed-forward blocks have {width} neurons, which do not split into {n} equal experts; "
            "choose --experts dividing it"
        )


def split_dense_model(
    dense_model, tokenizer, notes: NotesRead, request: SplitRequest, say: Callable[[str], None]
) -> SplitResult:
    check_request(dense_model.config, request)
    say(f"Reading the notes through the dense model (at most {request.max_tokens} tokens)...")
    calibration = calibrate(dense_model, tokenizer, notes, request.max_tokens, request.window)
    partitions, routers, recalls = [], [], []
    say(f"Partitioning {len(dense_model.model.layers)} feed-forward blocks and training their routers...")
    for index, layer in enumerate(dense_model.model.layers):
        inputs = calibration.ffn_inputs[index]
        hidden = swiglu_hidden(layer.mlp, inputs)
        down = layer.mlp.down_proj.weight.detach().float()
        partition = partition_neurons(hidden, down, request.experts, request.top_k, request.seed)
        importance = expert_importance(hidden, down, partition)
        fit = train_router(inputs, importance, request.top_k, request.seed)
        partitions.append(partition)
        routers.append(written_router(fit.weight, inputs, request.experts, request.top_k))
        recalls.append(fit.recall)
    model = build_moe_model(dense_model, partitions, routers, request.top_k)
    recovery = None
    if request.recover_minutes > 0 or request.recover_steps:
        say(f"Recovering for at most {request.recover_minutes:g} minute(s) on the notes...")
        model, recovery = recover(
            model, tokenizer, notes, request.recover_minutes, request.seed, request.recover_steps
        )
    total, active = parameter_counts(model)
    return SplitResult(model, tuple(recalls), calibration.tokens, total, active, recovery)


def parameter_counts(model) -> tuple[int, int]:
    """(total, active per token), each tied matrix counted once."""
    config = model.config
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied matrix once
    experts = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    return total, total - experts + experts * config.num_experts_per_tok // config.num_local_experts
