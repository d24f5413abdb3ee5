"""Drop the least useful experts of every MoE layer and write the smaller model as a new GGUF.

The experts to keep come from a routing measurement (quantize.moe.routing): the most salient by
REAP, or the most often chosen. GGUF stacks a layer's experts along the outermost axis of each
`*_exps` tensor, so pruning slices whole rows of bytes: a quantized file is pruned as it is, never
dequantized. Every other tensor and metadata key is copied unchanged, except the expert count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from quantize.errors import ConversionError
from quantize.gguf_names import FILE_TYPE, QUANTIZATION_VERSION, Keys, arch_key, expert_axis_template
from quantize.moe.routing import MoEShape, RoutingStats

METHODS = ("reap", "frequency")


@dataclass(frozen=True)
class PrunePlan:
    keep_count: int
    kept: dict[int, tuple[int, ...]]  # block -> the original indices of the experts kept, ascending


def keep_count(shape: MoEShape, keep: float) -> int:
    """How many experts per layer ``keep`` (a fraction in (0, 1]) leaves; ConversionError if too few."""
    if not 0 < keep <= 1:
        raise ConversionError(f"--keep must be a fraction in (0, 1], not {keep:g}")
    count = round(shape.expert_count * keep)
    if count < shape.experts_used:
        raise ConversionError(
            f"--keep {keep:g} leaves {count} of {shape.expert_count} experts per layer, fewer than the "
            f"{shape.experts_used} every token uses; keep at least {shape.experts_used}"
        )
    return count


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConversionError(f"unknown pruning method {method!r}; use {' or '.join(METHODS)}")
    return method


def plan_pruning(stats: RoutingStats, count: int, method: str) -> PrunePlan:
    """Keep the ``count`` highest-scoring experts of each layer; a tie goes to the other measure,
    then to the lower index, so the same numbers always give the same choice."""
    check_method(method)
    first, second = (stats.saliency, stats.counts) if method == "reap" else (stats.counts, stats.saliency)
    kept = {}
    for row, layer in enumerate(stats.layers):
        index = np.arange(stats.expert_count)
        order = np.lexsort((index, -second[row], -first[row]))  # the last key sorts first
        kept[layer] = tuple(sorted(int(i) for i in order[:count]))
    return PrunePlan(count, kept)


def prune_gguf(source: Path, target: Path, shape: MoEShape, plan: PrunePlan) -> None:
    """Write ``source`` with only the planned experts to ``target`` (a path the caller makes atomic)."""
    from quantize.torch_bridge import read_carried_metadata

    reader = gguf.GGUFReader(source)
    # (name, type, memory-mapped data, the experts kept or None): slices are copied one tensor at a
    # time while writing, so a large MoE is never held in memory whole.
    tensors: list[tuple[str, gguf.GGMLQuantizationType, np.ndarray, list[int] | None]] = []
    for tensor in reader.tensors:
        kept = None
        if expert_axis_template(tensor.name) is not None:
            layer = int(tensor.name.split(".")[1])
            if layer not in plan.kept:
                raise ConversionError(f"{tensor.name} holds experts, but no token reached layer {layer}")
            rows = tensor.data.shape[0]
            if rows != shape.expert_count:
                raise ConversionError(
                    f"{tensor.name} has {rows} rows on its expert axis, not {shape.expert_count}"
                )
            kept = list(plan.kept[layer])
        tensors.append((tensor.name, tensor.tensor_type, tensor.data, kept))
    sliced = {name.split(".")[1] for name, _, _, kept in tensors if kept is not None}
    if {str(layer) for layer in plan.kept} - sliced:
        raise ConversionError(f"{source.name} stores its experts other than as stacked *_exps tensors")

    writer = gguf.GGUFWriter(target, shape.arch)
    expert_count = arch_key(Keys.LLM.EXPERT_COUNT, shape.arch)
    for field in read_carried_metadata(source):
        value = plan.keep_count if field.key == expert_count else field.value
        writer.add_key_value(field.key, value, field.value_type, field.sub_type)
    for key in (FILE_TYPE, QUANTIZATION_VERSION):  # the tensors keep their types, so these still hold
        field = reader.get_field(key)
        if field is not None:
            writer.add_key_value(key, field.contents(), field.types[0])
    for name, tensor_type, data, kept in tensors:
        shape_out = data.shape if kept is None else (len(kept), *data.shape[1:])
        nbytes = data.nbytes if kept is None else data.nbytes // data.shape[0] * len(kept)
        writer.add_tensor_info(name, shape_out, data.dtype, nbytes, raw_dtype=tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, _, data, kept in tensors:
        writer.write_tensor_data(np.ascontiguousarray(data if kept is None else data[kept]))
    writer.close()
