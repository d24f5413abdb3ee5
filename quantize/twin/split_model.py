"""Train only the upper layers, and run the frozen lower ones once.

With LoRA on the top K of L layers, the lower L-K layers are the same function every epoch: their
output for a training sequence never changes. The twin computes it once per sequence and trains
on the cached hidden states, so a step costs the upper layers' forward and backward only. The
upper layers attend with causal_attention and, for long runs, run compiled by torch's inductor.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from quantize.twin.causal_attention import attention_for_training
from quantize.twin.sliced_loss import sliced_next_token_loss


@dataclass
class SplitModel:
    model: object  # a *ForCausalLM of quantize.families (possibly wrapped by peft: LoRA sits inside)
    cut: int  # layers [0, cut) are frozen and cached; [cut, L) train
    compiled: bool = False  # the trained layers run compiled by inductor (see compile_choice)
    _compiled_layers: list = field(default_factory=list, init=False, repr=False)

    @property
    def _inner(self):
        model = self.model
        while not hasattr(model, "embed_tokens"):
            model = model.model if hasattr(model, "model") else model.base_model
        return model

    def _position_embeddings(self, hidden: torch.Tensor, first: int, count: int):
        """Positions and each layer's rotary embedding (Gemma 3 rotates local and global layers with
        different bases)."""
        inner = self._inner
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        layer_types = getattr(inner.config, "layer_types", None)
        if layer_types and "layer_type" in inspect.signature(inner.rotary_emb.forward).parameters:
            by_type = {kind: inner.rotary_emb(hidden, positions, kind) for kind in set(layer_types)}
            return positions, [by_type[kind] for kind in layer_types[first : first + count]]
        return positions, [inner.rotary_emb(hidden, position_ids=positions)] * count

    def _run(self, hidden: torch.Tensor, layers, first: int) -> torch.Tensor:
        positions, rotaries = self._position_embeddings(hidden, first, len(layers))
        for layer, rotary in zip(layers, rotaries, strict=True):
            # No mask: with SDPA attention that means causal (checked by the twin's tests); the
            # trainer keeps sequences within any sliding window, where local attention is causal too.
            hidden = layer(hidden, attention_mask=None, position_embeddings=rotary, position_ids=positions)
        return hidden

    @torch.no_grad()
    def lower(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The frozen lower layers' output (the embeddings alone when every layer trains)."""
        inner = self._inner
        return self._run(inner.embed_tokens(input_ids), inner.layers[: self.cut], 0)

    def upper_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        inner = self._inner
        layers = inner.layers[self.cut :]
        if self.compiled:
            if not self._compiled_layers:
                # One compiled graph serves every layer (their weights are its inputs) but the
                # first: its input needs no gradient, which would make it a second graph, twice the
                # compile time for 1/L of the work, so it runs as it is.
                self._compiled_layers = [layers[0]] + [
                    torch.compile(layer, dynamic=False) for layer in layers[1:]
                ]
            layers = self._compiled_layers
        with attention_for_training(inner.config):
            return inner.norm(self._run(hidden, layers, self.cut))

    def upper_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._lm_head()(self.upper_hidden(hidden))

    def next_token_loss(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, product_dtype: torch.dtype
    ) -> torch.Tensor:
        """Mean cross-entropy of predicting each next token of the packed ``input_ids``, from the
        lower layers' output ``hidden`` for every position but the last (its prediction has no
        target, and under causal attention it changes none of the others)."""
        return sliced_next_token_loss(
            self.upper_hidden(hidden), self._lm_head().weight, input_ids[:, 1:], product_dtype, self.compiled
        )

    def _lm_head(self):
        model = self.model
        while not hasattr(model, "lm_head"):
            model = model.model if hasattr(model, "model") else model.base_model
        return model.lm_head
