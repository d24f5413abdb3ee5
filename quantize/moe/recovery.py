"""A short recovery fine-tune of a split model on the calibration notes, bounded by wall-clock time:
LoRA on attention and on the stacked experts, and the router itself, trained on the causal-LM loss.

The model trained is the one that will be written (scaled router, scaled down projections), and the
adapters are merged into it afterwards, so the file still computes exactly what torch computes. The
router's logits are tiny in that form; Adam's steps do not depend on the gradient's scale, and the
router's learning rate is set relative to its weights. With every expert active the router stays
frozen: its zeros are what makes that split exact. If the loss over the notes is not lower after
training, the adapters are dropped and the model is left as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
EXPERTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
RANK = 8
LEARNING_RATE = 2e-4
ROUTER_RELATIVE_STEP = 1e-3  # each Adam step moves the router by about this share of its mean |weight|


@dataclass(frozen=True)
class RecoveryResult:
    loss_before: float
    loss_after: float  # the loss of the model as returned (equal to before when the training was dropped)
    steps: int
    kept: bool


def notes_loss(model, windows) -> float:
    """Mean next-token cross-entropy over the windows, weighted by their token counts."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for window in windows:
            if len(window) < 2:
                continue
            ids = torch.tensor([window])
            total += float(model(input_ids=ids, labels=ids).loss) * (len(window) - 1)
            count += len(window) - 1
    return total / max(count, 1)


def recover(model, windows, minutes: float, seed: int = 0) -> tuple[object, RecoveryResult]:
    """Train for at most ``minutes``; returns the model (adapters merged) and the losses."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = model.config
    train_router = config.num_experts_per_tok < config.num_local_experts
    windows = [window for window in windows if len(window) >= 2]
    before = notes_loss(model, windows)
    torch.manual_seed(seed)
    lora = LoraConfig(
        r=RANK, lora_alpha=2 * RANK, target_modules=list(ATTENTION), target_parameters=list(EXPERTS)
    )
    peft_model = get_peft_model(model, lora)
    routers = [layer.mlp.gate.weight for layer in model.model.layers]
    saved_routers = [weight.detach().clone() for weight in routers]
    groups = [{"params": [p for p in peft_model.parameters() if p.requires_grad], "lr": LEARNING_RATE}]
    if train_router:
        for weight in routers:
            weight.requires_grad_(True)
            step = ROUTER_RELATIVE_STEP * float(weight.detach().abs().mean())
            groups.append({"params": [weight], "lr": step, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    deadline = time.monotonic() + minutes * 60
    steps = 0
    peft_model.train()
    while time.monotonic() < deadline:
        for index in torch.randperm(len(windows), generator=generator).tolist():
            ids = torch.tensor([windows[index]])
            loss = peft_model(input_ids=ids, labels=ids).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if time.monotonic() >= deadline:
                break
    peft_model.eval()
    for weight in routers:
        weight.requires_grad_(False)
    after = notes_loss(peft_model, windows)
    if after < before:
        return peft_model.merge_and_unload().eval(), RecoveryResult(before, after, steps, True)
    restored = peft_model.unload().eval()
    with torch.no_grad():
        for layer, saved in zip(restored.model.layers, saved_routers, strict=True):
            layer.mlp.gate.weight.copy_(saved)
    return restored, RecoveryResult(before, before, steps, False)
