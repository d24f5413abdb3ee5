"""Attention for training on packed sequences, written so torch's compiler can fuse it.

Training sequences are whole and causal: no padding mask, no cache, queries as long as keys. For
such short sequences the attention written out as two matrix products around a masked fp32
softmax, with the query heads that share a key-value head stacked instead of the keys copied,
runs its forward and backward faster than SDPA's CPU kernel, and about twice as fast once
compiled (bench/bench_twin.py, bench/RESULTS.md). It holds every score, so longer sequences
(more than MAX_POSITIONS) keep SDPA's memory-efficient kernel, as does anything else (a mask, a
cache, dropout): those go to transformers' SDPA path unchanged.
"""

from __future__ import annotations

import contextlib

import torch

NAME = "lantern_causal_training"
MAX_POSITIONS = 1024  # scores of a batch of 2 at 1,024 positions: 75 MB per layer in fp32


def causal_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' attention interface: ``query`` (batch, heads, positions, dim), ``key`` and
    ``value`` (batch, key-value heads, positions, dim); returns (batch, positions, heads, dim)."""
    batch, heads, positions, dim = query.shape
    kv_heads = key.shape[1]
    unsuited = attention_mask is not None or dropout or key.shape[2] != positions or heads % kv_heads
    if unsuited or positions > MAX_POSITIONS:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    # Query heads sharing a key-value head are stacked along the positions (grouped-query
    # attention without copying the keys and values): row r is position r % positions.
    stacked = query.reshape(batch, kv_heads, groups * positions, dim)
    scores = torch.matmul(stacked, key.transpose(-1, -2)).float() * scale
    key_position = torch.arange(positions, device=query.device)
    query_position = key_position.repeat(groups)
    scores = scores.masked_fill(key_position[None, :] > query_position[:, None], float("-inf"))
    probabilities = torch.softmax(scores, dim=-1).to(value.dtype)
    output = torch.matmul(probabilities, value).reshape(batch, heads, positions, dim)
    return output.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, causal_attention)


@contextlib.contextmanager
def attention_for_training(config):
    """Within this block the model whose ``config`` is given attends with ``causal_attention``."""
    _register()
    previous = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
