"""Perplexity of the twin in torch, on exactly the windows llama.cpp's evaluation uses, so the two
can be compared number for number."""

from __future__ import annotations

import math

import torch

from quantize.evaluation import EvalSettings, scored_windows


@torch.no_grad()
def torch_perplexity(model, tokenizer, text: str, settings: EvalSettings) -> tuple[float, int]:
    """(perplexity, tokens scored) of ``model`` over ``text``."""
    model.eval()
    tokens = tokenizer.encode(text, add_special_tokens=False)[: settings.max_tokens]
    nll, scored = 0.0, 0
    for window, rows, targets in scored_windows(tokens, settings):
        logits = model(input_ids=torch.tensor([window])).logits[0, torch.from_numpy(rows)].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        nll -= float(log_probs.gather(1, torch.from_numpy(targets)[:, None]).sum(dtype=torch.float64))
        scored += len(targets)
    return math.exp(nll / scored), scored
