"""The calibration text of a split: the user's notes as token windows, and what each feed-forward
block of the dense model receives when it reads them."""

from __future__ import annotations

from dataclasses import dataclass

from quantize.errors import ConversionError
from quantize.notes_text import NotesRead, note_token_ids


@dataclass(frozen=True)
class Calibration:
    windows: list[list[int]]  # token ids, at most `window` each
    ffn_inputs: list  # per layer, a [tokens, hidden] float32 tensor: the MLP's input (after its norm)

    @property
    def tokens(self) -> int:
        return sum(len(window) for window in self.windows)


def note_windows(tokenizer, notes: NotesRead, max_tokens: int, window: int) -> list[list[int]]:
    """The notes' tokens, cut into windows of ``window`` (the last may be shorter)."""
    ids = note_token_ids(tokenizer, notes, max_tokens)
    if len(ids) < 2:
        raise ConversionError("the calibration notes hold fewer than 2 tokens of text; give more notes")
    return [ids[start : start + window] for start in range(0, len(ids), window)]


def capture_ffn_inputs(model, windows: list[list[int]]) -> list:
    """Run the dense model over ``windows`` and keep every layer's MLP input, token by token."""
    import torch

    captured: list[list] = [[] for _ in model.model.layers]

    def keep(layer: int):
        def hook(_module, inputs):
            captured[layer].append(inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float())

        return hook

    handles = [layer.mlp.register_forward_pre_hook(keep(i)) for i, layer in enumerate(model.model.layers)]
    try:
        with torch.no_grad():
            for window in windows:
                model.model(torch.tensor([window]))  # the decoder alone: the logits are not needed
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(parts) for parts in captured]


def calibrate(model, tokenizer, notes: NotesRead, max_tokens: int = 8192, window: int = 512) -> Calibration:
    windows = note_windows(tokenizer, notes, max_tokens, window)
    return Calibration(windows, capture_ffn_inputs(model, windows))
