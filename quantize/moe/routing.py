"""How a Mixture-of-Experts model routes a text, measured inside llama.cpp itself.

For every MoE layer and expert: how many tokens chose it, and its REAP saliency (Lasby et al.,
"REAP", ICLR 2026): the mean, over the tokens routed to the expert, of the router weight that
scales its output times the L2 norm of that output. An expert that is never chosen, or whose
weighted contribution is small, is what pruning can drop with the least harm.

llama.cpp's `build_moe_ffn` names the tensors read here, for every architecture it runs:
``ffn_moe_argsort-{il}`` (experts by router score, the first `experts_used` chosen),
``ffn_moe_weights*-{il}`` (the chosen experts' weights; the last stage computed is what scales the
outputs) and ``ffn_moe_down-{il}`` (each chosen expert's output, before weighting).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.gguf_file import open_gguf
from quantize.cores import usable_cores
from quantize.errors import ConversionError
from quantize.gguf_names import ARCHITECTURE, Keys, arch_key
from quantize.native_output import captured_native_output

WINDOW = 512  # tokens per decode: routing needs no long context, and memory stays small

# The stages of the chosen experts' weights, last computed first: an architecture that renormalises
# (or scales) them multiplies the outputs by the later stage.
WEIGHT_STAGES = ("weights_scaled", "weights_norm", "weights_softmax", "weights")
OUTPUT_STAGES = ("down_biased", "down")  # an expert's output, with its bias when it has one
_WANTED = re.compile(r"ffn_moe_(argsort|topk|" + "|".join(WEIGHT_STAGES + OUTPUT_STAGES) + r")-(\d+)")


@dataclass(frozen=True)
class MoEShape:
    arch: str
    expert_count: int
    experts_used: int
    block_count: int


@dataclass(frozen=True)
class RoutingStats:
    """Routing of ``tokens`` tokens; row i of counts and saliency is block ``layers[i]``."""

    arch: str
    layers: tuple[int, ...]
    expert_count: int
    experts_used: int
    tokens: int
    counts: np.ndarray  # int64 [len(layers), expert_count]: tokens that chose each expert
    saliency: np.ndarray  # float64 [len(layers), expert_count]: REAP saliency, 0 where never chosen

    def frequency(self) -> np.ndarray:
        """Share of tokens that chose each expert (a row sums to experts_used)."""
        return self.counts / max(self.tokens, 1)

    def never_chosen(self) -> list[list[int]]:
        return [np.flatnonzero(row == 0).tolist() for row in self.counts]

    def as_json(self) -> dict:
        return {
            "arch": self.arch,
            "tokens": self.tokens,
            "expert_count": self.expert_count,
            "experts_used": self.experts_used,
            "layers": [
                {"layer": layer, "counts": counts.tolist(), "saliency": saliency.tolist()}
                for layer, counts, saliency in zip(self.layers, self.counts, self.saliency, strict=True)
            ],
        }


def moe_shape(path: Path) -> MoEShape:
    """The expert counts a GGUF declares; ConversionError if it has no experts."""
    header = open_gguf(path)
    arch = header.get(ARCHITECTURE)

    def number(template: str) -> int:
        value = header.get(arch_key(template, arch))
        return int(value) if isinstance(value, int) else 0

    experts, used = number(Keys.LLM.EXPERT_COUNT), number(Keys.LLM.EXPERT_USED_COUNT)
    if experts < 2 or used < 1:
        raise ConversionError(f"{path.name} is dense: no experts to route or prune ({arch})")
    return MoEShape(arch, experts, used, number(Keys.LLM.BLOCK_COUNT))


class _Layers:
    """What the graph hands over during one decode, reduced as it arrives, then added up."""

    def __init__(self, shape: MoEShape, embedding_length: int):
        self.shape = shape
        self.embedding_length = embedding_length
        self.counts: dict[int, np.ndarray] = {}
        self.sums: dict[int, np.ndarray] = {}
        self.tokens = 0
        self._pending: dict[int, dict[str, np.ndarray]] = {}

    @staticmethod
    def dtype_for(name: str):
        match = _WANTED.fullmatch(name)
        if match is None:
            return None
        return np.int32 if match.group(1) in ("argsort", "topk") else np.float32

    def receive(self, name: str, data: np.ndarray) -> None:
        stage, layer = _WANTED.fullmatch(name).groups()
        n, k = self.shape.expert_count, self.shape.experts_used
        pending = self._pending.setdefault(int(layer), {})
        if stage == "argsort":
            pending.setdefault("chosen", data.reshape(-1, n)[:, :k])
        elif stage == "topk":  # contiguous only where a llama.cpp computes top-k as its own op
            pending["chosen"] = data.reshape(-1, k)
        elif stage in OUTPUT_STAGES:
            outputs = data.reshape(-1, k, self.embedding_length)  # ggml's [n_embd, K, n_tokens]
            pending[stage] = np.linalg.norm(outputs.astype(np.float64), axis=2)
        else:
            pending[stage] = data.reshape(-1, k).astype(np.float64)

    def finish_batch(self, n_tokens: int) -> None:
        """Add up one decode's routing; every MoE layer must have seen every token."""
        for layer, pending in self._pending.items():
            chosen = pending.get("chosen")
            weights = next((pending[s] for s in WEIGHT_STAGES if s in pending), None)
            norms = next((pending[s] for s in OUTPUT_STAGES if s in pending), None)
            if chosen is None or weights is None or norms is None or len(chosen) != n_tokens:
                raise ConversionError(
                    f"llama.cpp's graph for layer {layer} did not show its routing for all {n_tokens} "
                    "tokens; this architecture's MoE layer is not measurable yet"
                )
            n = self.shape.expert_count
            chosen = chosen.ravel()
            self.counts.setdefault(layer, np.zeros(n, np.int64))
            self.sums.setdefault(layer, np.zeros(n, np.float64))
            self.counts[layer] += np.bincount(chosen, minlength=n)
            self.sums[layer] += np.bincount(chosen, weights=(weights * norms).ravel(), minlength=n)
        self.tokens += n_tokens
        self._pending.clear()


def measure_routing(path: Path, text: str, max_tokens: int = 8192, min_tokens: int = 1) -> RoutingStats:
    """Run ``text`` (its first ``max_tokens`` tokens, in windows) through the GGUF at ``path``."""
    import llama_cpp

    from app.llama_log import quiet_llama_cpp
    from quantize.moe.graph_tensors import GraphTap

    path = Path(path)
    shape = moe_shape(path)
    quiet_llama_cpp()
    threads = usable_cores()
    with captured_native_output() as output:
        params = llama_cpp.llama_model_default_params()  # memory-mapped, on the CPU
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ConversionError(f"llama.cpp could not load {path}\n{output.tail()}")
    context = batch = None
    try:
        layers = _Layers(shape, llama_cpp.llama_model_n_embd(model))
        tap = GraphTap(layers.dtype_for, layers.receive)
        tokens = _tokenize(model, text, max_tokens)
        if len(tokens) < min_tokens:
            raise ConversionError(
                f"the text has {len(tokens)} tokens; give at least {min_tokens} "
                "for a meaningful routing count"
            )
        window = max(1, min(WINDOW, llama_cpp.llama_model_n_ctx_train(model) or WINDOW))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = window  # one graph per decode
        params.n_threads = params.n_threads_batch = threads
        params.cb_eval = tap.callback
        with captured_native_output() as output:
            context = llama_cpp.llama_init_from_model(model, params)
        if not context:
            raise ConversionError(f"llama.cpp could not open a context for {path}\n{output.tail()}")
        batch = llama_cpp.llama_batch_init(window, 0, 1)
        for start in range(0, len(tokens), window):
            piece = tokens[start : start + window]
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)
            _fill(batch, piece)
            status = llama_cpp.llama_decode(context, batch)
            if tap.failure is not None:
                raise tap.failure
            if status != 0:
                raise ConversionError(f"llama.cpp failed to run the text (status {status})")
            layers.finish_batch(len(piece))
    finally:
        if batch is not None:
            llama_cpp.llama_batch_free(batch)
        if context:
            llama_cpp.llama_free(context)
        llama_cpp.llama_model_free(model)
    return _stats(shape, layers)


def _tokenize(model, text: str, max_tokens: int) -> list[int]:
    import llama_cpp

    if not text.strip():
        raise ConversionError("the text is empty")
    vocab = llama_cpp.llama_model_get_vocab(model)
    data = text.encode("utf-8")
    room = len(data) + 8
    buffer = (llama_cpp.llama_token * room)()
    count = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, room, False, False)
    if count < 0:
        raise ConversionError("llama.cpp could not tokenize the text")
    return list(buffer[: min(count, max_tokens)])


def _fill(batch, tokens: list[int]) -> None:
    """Every position asks for its logits: llama.cpp otherwise runs the last layer for the last token only."""
    batch.n_tokens = len(tokens)
    for i, token in enumerate(tokens):
        batch.token[i] = token
        batch.pos[i] = i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1


def _stats(shape: MoEShape, layers: _Layers) -> RoutingStats:
    order = tuple(sorted(layers.counts))
    if not order:
        raise ConversionError("llama.cpp's graph showed no expert routing for this model")
    counts = np.stack([layers.counts[layer] for layer in order])
    sums = np.stack([layers.sums[layer] for layer in order])
    saliency = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return RoutingStats(
        shape.arch, order, shape.expert_count, shape.experts_used, layers.tokens, counts, saliency
    )
