"""An importance matrix from the user's own notes: how strongly each input column of every weight
matrix is driven, so llama.cpp's quantizer spends its precision where the notes need it.

llama.cpp's `llama-imatrix` tool gathers the same statistic (mean squared activation per input
column) through its evaluation callback; here the torch model from the GGUF bridge runs the notes
and forward hooks on each linear layer collect it. A Mixture-of-Experts model's stacked experts are
not linear layers in torch and get no entry: llama.cpp quantizes them without one.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from quantize.families import family_for_model_type
from quantize.family_tensors import gguf_name as tensor_gguf_name
from quantize.notes_text import NotesRead, note_token_ids
from quantize.torch_bridge import TorchModel


@dataclass(frozen=True)
class ImportanceMatrix:
    values: dict[str, np.ndarray]  # GGUF tensor name -> mean squared input activation per column
    tokens: int  # how many tokens of notes were run

    def as_llama_cpp(self):
        """The null-terminated llama_model_imatrix_data array llama_model_quantize takes; keep the
        returned holder alive for as long as llama.cpp may read it."""
        import llama_cpp

        entries = (llama_cpp.llama_model_imatrix_data * (len(self.values) + 1))()
        keep = [entries]
        for index, (name, column_means) in enumerate(sorted(self.values.items())):
            data = np.ascontiguousarray(column_means, dtype=np.float32)
            encoded = name.encode()
            keep += [data, encoded]
            entries[index].name = encoded
            entries[index].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[index].size = data.size
        entries[len(self.values)].name = None
        return ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data)), keep


def compute_importance_matrix(
    torch_model: TorchModel, notes: NotesRead, max_tokens: int = 8192, window: int = 512
) -> ImportanceMatrix:
    import torch

    model = torch_model.model
    config = model.config
    family = family_for_model_type(config.model_type, "the torch model")
    names = family.tensor_names(config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def gguf_name(module_name: str) -> str | None:
        if module_name == "lm_head":
            return "token_embd.weight" if tied else "output.weight"
        return tensor_gguf_name(family, names, module_name + ".weight")

    def collect(name: str):
        def hook(_module, inputs):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64)
            sums[name] = sums.get(name, 0) + (x * x).sum(dim=0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        return hook

    handles = []
    for module_name, module in model.named_modules():
        if module_name == "lm_head":
            continue  # its input is the decoder's output, taken below without computing the logits
        if isinstance(module, torch.nn.Linear) and (name := gguf_name(module_name)):
            handles.append(module.register_forward_pre_hook(collect(name)))
    output_matrix = collect(gguf_name("lm_head"))
    ids = note_token_ids(torch_model.tokenizer, notes, max_tokens)
    try:
        with torch.no_grad():
            for start in range(0, len(ids), window):
                # The decoder alone: a 262k-token vocabulary (Gemma 3) makes the logits the costliest part.
                hidden = model.model(torch.tensor([ids[start : start + window]])).last_hidden_state
                output_matrix(None, (hidden,))
    finally:
        for handle in handles:
            handle.remove()
    values = {name: (sums[name] / counts[name]).to(torch.float32).numpy() for name in sums}
    return ImportanceMatrix(values, len(ids))
