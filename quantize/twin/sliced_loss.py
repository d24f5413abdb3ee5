"""Next-token cross-entropy straight from the last hidden states, a slice of positions at a time.

A batch's vocabulary-wide logits (about 1,000 positions x 49,152 tokens: 200 MB in fp32) are never
held whole. Each slice's logits, softmax and gradient towards the hidden states are computed in one
go during the forward pass, which spares the separate float copy, log-softmax, zero-filled gradient
and its backward that the plain `lm_head -> cross_entropy` path makes over the whole tensor
(bench/bench_twin.py measures the speed it adds). The loss and gradient are those of the plain
path; the output matrix must be frozen, as it is under the twin's LoRA, since it gets no gradient.
"""

from __future__ import annotations

import torch

POSITIONS_PER_SLICE = 128


class _SlicedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, output_weight, targets, product_dtype):
        rows = hidden.reshape(-1, hidden.shape[-1])
        targets = targets.reshape(-1)
        needs_grad = ctx.needs_input_grad[0]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(rows) if needs_grad else None
        with torch.autocast(hidden.device.type, enabled=False):
            weight, rows_in = output_weight.to(product_dtype), rows.to(product_dtype)
            for start in range(0, len(rows), POSITIONS_PER_SLICE):
                end = start + POSITIONS_PER_SLICE
                target = targets[start:end]
                log_probabilities = torch.log_softmax((rows_in[start:end] @ weight.T).float(), dim=-1)
                total -= log_probabilities.gather(1, target[:, None]).sum()
                if needs_grad:
                    # d(loss)/d(logits) = softmax - one_hot(target), computed in place.
                    probabilities = log_probabilities.exp_()
                    probabilities[torch.arange(len(target)), target] -= 1
                    grad[start:end] = probabilities.to(product_dtype) @ weight
        count = len(rows)
        if needs_grad:
            ctx.save_for_backward(grad.div_(count).view_as(hidden))
        return total / count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, upstream):
        (grad,) = ctx.saved_tensors
        return grad * upstream, None, None, None


def sliced_next_token_loss(
    hidden: torch.Tensor, output_weight: torch.Tensor, targets: torch.Tensor, product_dtype: torch.dtype
) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` (already shifted: one per position of ``hidden``) under
    logits ``hidden @ output_weight.T``, products in ``product_dtype`` and softmax in fp32, with its
    gradient towards ``hidden`` only."""
    if output_weight.requires_grad:
        raise ValueError("the sliced loss gives no gradient to the output matrix: freeze it first")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"one target per position: hidden {tuple(hidden.shape)}, targets {tuple(targets.shape)}"
        )
    return _SlicedCrossEntropy.apply(hidden, output_weight, targets, product_dtype)
