"""`lantern moe split`: a dense model cut into a Mixture-of-Experts on the user's notes."""

from __future__ import annotations

import time
from pathlib import Path

import click

from app.cli.context import assistant_from
from app.cli.model_files import calibration_option, new_model, say
from app.sizes import human_bytes, human_count


@click.command()
@click.argument("src")
@click.option("--experts", "experts", type=int, required=True, help="Experts per feed-forward block (N).")
@click.option("--top-k", "top_k", type=int, required=True, help="Experts run per token (K).")
@calibration_option("Notes folder or file: which neurons fire together, and what the routers learn from.")
@click.option(
    "--recover-minutes", default=0.0, show_default=True, help="Fine-tune LoRA and routers this long."
)
@click.option("--type", "out_type", default="F16", show_default=True, help="F16, BF16 or F32.")
@click.option("--name", help="Name in the store (default: from the source, the experts and K).")
@click.pass_context
def split(ctx, src, experts, top_k, notes_path, recover_minutes, out_type, name):
    """Cut SRC's feed-forward blocks into EXPERTS experts, K of them run per token (MoEfication)."""
    from quantize.errors import ConversionError
    from quantize.gguf_export import write_gguf
    from quantize.gguf_names import Keys, arch_key
    from quantize.moe.dense_split import SplitRequest, check_counts, check_request, split_dense_model
    from quantize.moe.moefied_model import check_splittable_type, moe_metadata
    from quantize.notes_text import read_notes
    from quantize.quant_types import float_type
    from quantize.sources import resolve_source
    from quantize.torch_bridge import load_torch_model

    out_type = float_type(out_type)
    store = assistant_from(ctx).models
    source = resolve_source(src, store)
    if source.family.moe or (
        source.kind == "gguf"
        and source.summary is not None
        and _has_experts(source.path, arch_key(Keys.LLM.EXPERT_COUNT, source.family.arch))
    ):
        raise ConversionError(
            f"{source.name} is already a Mixture-of-Experts; `moe split` takes a dense model"
        )
    check_splittable_type(source.family.hf_model_type)
    request = SplitRequest(experts, top_k, recover_minutes)
    check_counts(request)
    notes = read_notes(notes_path)
    started = time.perf_counter()
    default_name = f"{source.name}-moe{experts}x{top_k}"
    with new_model(store, None, name, default_name, False) as (tmp, final_name, path):
        say(f"Loading {source.path} into torch...")
        torch_model = load_torch_model(source)
        check_request(torch_model.model.config, request)
        result = split_dense_model(torch_model.model, torch_model.tokenizer, notes, request, say)
        say(f"Writing {out_type} GGUF...")
        carried = torch_model.carried_metadata
        write_gguf(
            result.model,
            tmp,
            out_type,
            carried=moe_metadata(carried, result.model.config) if carried is not None else None,
            hf_folder=source.path if source.kind == "hf" else None,
            tokenizer=torch_model.tokenizer,
            name=final_name,
        )
    recalls = result.router_recall
    click.echo(
        f"Router recall of the best {top_k} of {experts} experts on held-out calibration tokens: "
        f"mean {sum(recalls) / len(recalls):.1%} (layers {min(recalls):.0%}-{max(recalls):.0%}; "
        f"{result.calibration_tokens} tokens of notes)"
    )
    click.echo(
        f"Parameters: {human_count(result.parameters)} total, {human_count(result.active_parameters)} "
        "active per token"
    )
    if result.recovery is not None:
        recovery = result.recovery
        outcome = "kept" if recovery.kept else "dropped: the loss did not fall"
        click.echo(
            f"Recovery: loss on held-out notes {recovery.loss_before:.3f} -> {recovery.loss_after:.3f} "
            f"after {recovery.steps} steps ({outcome})"
        )
    click.echo(
        f"Wrote {path} ({human_bytes(path.stat().st_size)}, {out_type}) in "
        f"{time.perf_counter() - started:.0f} s; in the store as {final_name}."
    )


def _has_experts(path: Path, key: str) -> bool:
    from app.gguf_file import open_gguf

    return open_gguf(path).get(key) is not None
