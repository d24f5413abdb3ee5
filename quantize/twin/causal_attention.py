"""Attention for training on packed sequences, written so torch's compiler can fuse it.

Training sequences are whole and causal: no padding mask, no cache, queries as long as keys. For
such short sequences (256 tokens) the attention written out as two matrix products around a
masked fp32 softmax, once compiled, runs its forward and backward in about half the time of
SDPA's CPU kernel (bench/RESULTS.md). Uncompiled it is slower than SDPA, so the twin switches it
on only around its compiled layers (`attention_for_training`). Anything else (a mask, a cache,
dropout) goes to transformers' SDPA path unchanged.
"""

from __future__ import annotations

import contextlib

import torch

NAME = "lantern_causal_training"


def causal_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' attention interface: ``query`` (batch, heads, positions, dim), ``key`` and
    ``value`` (batch, key-value heads, positions, dim); returns (batch, positions, heads, dim)."""
    batch, heads, positions, dim = query.shape
    kv_heads = key.shape[1]
    if attention_mask is not None or dropout or key.shape[2] != positions or heads % kv_heads:
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
