"""Does the torch model compute what llama.cpp computes? Logits of both on the same tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantize.native_output import captured_native_output
from quantize.torch_bridge import TorchModel


@dataclass(frozen=True)
class Fidelity:
    positions: int
    top1_agreement: float  # share of positions where both pick the same next token
    max_abs_diff: float  # largest logit difference anywhere
    mean_abs_diff: float
    # Positions where torch's best token leads its second by more than twice max_abs_diff, so that
    # no rounding within the measured difference could change the pick; top-1 agreement among them.
    # (Random tiny models have near-ties that float rounding alone decides.)
    decisive_positions: int = 0
    decisive_top1_agreement: float = 1.0


def reference_text() -> str:
    """A fixed English/technical text that ships with every Python: the pydoc topics."""
    from pydoc_data.topics import topics

    return topics["assert"] + topics["class"] + topics["while"]


def compare_logits(torch_model: TorchModel, gguf_path: Path, positions: int = 256) -> Fidelity:
    import llama_cpp
    import torch

    ids = torch_model.tokenizer.encode(reference_text(), add_special_tokens=False)[:positions]
    with torch.no_grad():
        torch_logits = torch_model.model(torch.tensor([ids])).logits[0].float().numpy()
    with captured_native_output():
        llm = llama_cpp.Llama(
            model_path=str(gguf_path), n_ctx=max(512, len(ids)), n_batch=512, logits_all=True, verbose=False
        )
    try:
        llm.eval(ids)
        llama_logits = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()
    diff = np.abs(llama_logits - torch_logits)
    same = llama_logits.argmax(axis=1) == torch_logits.argmax(axis=1)
    top_two = np.sort(torch_logits, axis=1)[:, -2:]
    decisive = (top_two[:, 1] - top_two[:, 0]) > 2 * diff.max()
    return Fidelity(
        len(ids),
        float(same.mean()),
        float(diff.max()),
        float(diff.mean()),
        int(decisive.sum()),
        float(same[decisive].mean()) if decisive.any() else 1.0,
    )
