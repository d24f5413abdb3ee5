"""Perplexity of the twin in torch, on exactly the windows llama.cpp's evaluation uses, so the two
can be compared number for number."""

from __future__ import annotations

import math

import torch

from quantize.evaluation import EvalSettings, windows


@torch.no_grad()
def torch_perplexity(model, tokenizer, text: str, settings: EvalSettings) -> tuple[float, int]:
    """(perplexity, tokens scored) of ``model`` over ``text``."""
    model.eval()
    tokens = tokenizer.encode(text, add_special_tokens=False)[: settings.max_tokens]
    nll, scored = 0.0, 0
    for start, end, first in windows(len(tokens), settings.window, settings.stride):
        window = torch.tensor([tokens[start:end]])
        log_probs = torch.log_softmax(model(input_ids=window).logits[0].float(), dim=-1)
        targets = window[0, first:]
        nll -= float(log_probs[first - 1 : end - start - 1].gather(1, targets[:, None]).sum())
        scored += len(targets)
    return math.exp(nll / scored), scored
