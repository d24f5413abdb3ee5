"""A router per layer: a linear map from the feed-forward block's input to one score per expert,
trained to rank first the experts whose output matters most for the token.

The oracle is each expert's output norm on the calibration tokens; the loss is binary cross-entropy
against the oracle's top-K (which experts to run, not how much each weighs: the split model sums
the chosen experts unweighted). A held-out share of the tokens measures recall: the fraction of the
oracle's top-K the router picks.
"""

from __future__ import annotations

from dataclasses import dataclass

HELD_OUT = 0.1
STEPS = 300
LEARNING_RATE = 1e-2


@dataclass(frozen=True)
class RouterFit:
    weight: object  # [experts, hidden] float32 tensor, no bias (as Mixtral's)
    recall: float  # held-out share of the oracle's top-K experts that the router's top-K holds


def expert_importance(hidden, down_weight, partition):
    """[tokens, experts]: the norm of each expert's output, ||down[:, neurons] h[neurons]||."""
    import torch

    with torch.no_grad():
        return torch.stack(
            [(hidden[:, neurons] @ down_weight[:, neurons].T).norm(dim=1) for neurons in partition], dim=1
        )


def top_k_recall(scores, oracle, top_k: int) -> float:
    import torch

    chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(top_k, dim=1).indices, True)
    wanted = torch.zeros_like(oracle, dtype=torch.bool).scatter_(1, oracle.topk(top_k, dim=1).indices, True)
    return float((chosen & wanted).sum() / wanted.sum())


def train_router(inputs, importance, top_k: int, seed: int = 0) -> RouterFit:
    """Fit a router to (FFN input, expert importance) pairs; full-batch Adam, a few hundred steps."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tokens, experts = importance.shape
    order = torch.randperm(tokens, generator=generator)
    held = order[: max(1, int(tokens * HELD_OUT))]
    train = order[len(held) :] if tokens > len(held) else held
    targets = torch.zeros_like(importance).scatter_(1, importance.topk(top_k, dim=1).indices, 1.0)
    router = torch.nn.Linear(inputs.shape[1], experts, bias=False)
    with torch.no_grad():
        router.weight.normal_(0.0, 0.01, generator=generator)
    optimizer = torch.optim.Adam(router.parameters(), lr=LEARNING_RATE)
    x, y = inputs[train], targets[train]
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(router(x), y)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        recall = top_k_recall(router(inputs[held]), importance[held], top_k)
    return RouterFit(router.weight.detach().clone(), recall)
