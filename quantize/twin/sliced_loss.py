"""Next-token cross-entropy straight from the last hidden states, a slice of positions at a time.

A batch's vocabulary-wide logits (about 1,000 positions x 49,152 tokens: 200 MB in fp32) are never
held whole. Each slice's logits, softmax and gradient towards the hidden states are computed in one
go during the forward pass, which spares the separate float copy, log-softmax, zero-filled gradient
and its backward that the plain `lm_head -> cross_entropy` path makes over the whole tensor
(bench/bench_twin.py measures the speed it adds). The loss and gradient are those of the plain
path; the output matrix must be frozen, as it is under the twin's LoRA, since it gets no gradient.

With ``compiled``, inductor fuses a slice's softmax and its gradient into a few passes over the
logits, where eager torch makes one per operation; what is left is mostly the two matrix products.
"""

from __future__ import annotations

import functools

import torch

POSITIONS_PER_SLICE = 128


def _slice_in_place(rows, weight, targets):
    """One slice's loss per row and the gradient of their sum towards ``rows``, eagerly: the
    softmax gradient is made in place in the log-probabilities, the fewest copies torch's own
    kernels allow."""
    log_probabilities = torch.log_softmax((rows @ weight.T).float(), dim=-1)
    losses = -log_probabilities.gather(1, targets[:, None]).squeeze(1)
    # d(loss)/d(logits) = softmax - one_hot(target)
    probabilities = log_probabilities.exp_()
    probabilities[torch.arange(len(targets)), targets] -= 1
    return losses, probabilities.to(weight.dtype) @ weight


def _slice_whole_tensor(rows, weight, targets):
    """The same as whole-tensor operations, which inductor fuses (and which run slower eagerly)."""
    logits = (rows @ weight.T).float()
    log_normalizer = torch.logsumexp(logits, dim=-1, keepdim=True)
    is_target = torch.arange(logits.shape[1], device=logits.device) == targets[:, None]
    d_logits = torch.exp(logits - log_normalizer) - is_target.float()
    losses = log_normalizer.squeeze(1) - logits.gather(1, targets[:, None]).squeeze(1)
    return losses, d_logits.to(weight.dtype) @ weight


@functools.cache
def _compiled_slice():
    return torch.compile(_slice_whole_tensor, dynamic=False)


class _SlicedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, output_weight, targets, product_dtype, compiled):
        rows = hidden.reshape(-1, hidden.shape[-1])
        targets = targets.reshape(-1)
        count = len(rows)
        one_slice = _compiled_slice() if compiled else _slice_in_place
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(rows)
        with torch.autocast(hidden.device.type, enabled=False):
            weight, rows_in = output_weight.to(product_dtype), rows.to(product_dtype)
            for start in range(0, count, POSITIONS_PER_SLICE):
                # Every slice has the same shape (one compiled graph): the last one reaches back
                # over rows already counted and keeps only its new ones.
                begin = max(0, min(start, count - POSITIONS_PER_SLICE))
                end = begin + POSITIONS_PER_SLICE
                losses, slice_grad = one_slice(rows_in[begin:end], weight, targets[begin:end])
                total += losses[start - begin :].sum()
                grad[start:end] = slice_grad[start - begin :]
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(grad.div_(count).view_as(hidden))
        return total / count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, upstream):
        (grad,) = ctx.saved_tensors
        return grad * upstream, None, None, None, None


def sliced_next_token_loss(
    hidden: torch.Tensor,
    output_weight: torch.Tensor,
    targets: torch.Tensor,
    product_dtype: torch.dtype,
    compiled: bool = False,
) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` (already shifted: one per position of ``hidden``) under
    logits ``hidden @ output_weight.T``, products in ``product_dtype`` and softmax in fp32, with its
    gradient towards ``hidden`` only; ``compiled`` runs each slice compiled by inductor."""
    if output_weight.requires_grad:
        raise ValueError("the sliced loss gives no gradient to the output matrix: freeze it first")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"one target per position: hidden {tuple(hidden.shape)}, targets {tuple(targets.shape)}"
        )
    return _SlicedCrossEntropy.apply(hidden, output_weight, targets, product_dtype, compiled)
