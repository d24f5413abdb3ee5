"""`lantern moe ...`: fit a Mixture-of-Experts model to a small machine and to the user's notes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from app.cli.context import assistant_from
from app.cli.model_files import calibration_option, model_path, new_model, read_text, say
from app.gguf_file import inspect_gguf
from app.sizes import human_bytes
from quantize.errors import ConversionError

MIN_CALIBRATION_TOKENS = 64  # fewer tokens than this say little about which experts a model needs


@click.group()
def moe() -> None:
    """Routing report, expert pruning and dense -> MoE splitting."""


@moe.command("stats")
@click.argument("model")
@click.option("--text", "text_file", required=True, type=click.Path(path_type=Path), help="Text to route.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--png", "png_file", type=click.Path(path_type=Path), help="Also write the heatmaps as PNG.")
@click.pass_context
def stats(ctx, model, text_file, as_json, png_file):
    """How often MODEL's router chooses each expert on a text, and each expert's REAP saliency."""
    from quantize.moe.routing import measure_routing, moe_shape

    name, path = model_path(ctx, model)
    moe_shape(path)  # a dense model is refused before the text is read
    text = read_text(text_file)
    if not text.strip():
        raise ConversionError(f"{text_file} holds no text to route")
    routing = measure_routing(path, text)
    if png_file is not None:
        _write_png(png_file, routing)
    if as_json:
        click.echo(json.dumps({"model": name, **routing.as_json()}))
        return
    _print_report(name, routing)
    if png_file is not None:
        click.echo(f"Heatmaps written to {png_file}.")


def _write_png(path: Path, routing) -> None:
    from app.atomic import atomic_write_bytes
    from quantize.moe.heatmap import heatmap_image, normalised, png_bytes

    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise ConversionError(f"the folder {path.parent} does not exist")
    image = heatmap_image([normalised(routing.frequency()), normalised(routing.saliency)])
    atomic_write_bytes(path, png_bytes(image), mode=0o644)


def _print_report(name: str, routing) -> None:
    import numpy as np
    from rich.console import Console
    from rich.text import Text

    from quantize.moe.heatmap import colours, normalised

    console = Console(highlight=False)
    console.print(
        f"[bold]{name}[/bold] ({routing.arch}): {routing.tokens} tokens, {routing.experts_used} of "
        f"{routing.expert_count} experts per token, {len(routing.layers)} MoE layers"
    )
    panels = (
        ("how often chosen", routing.frequency()),
        ("REAP saliency (router weight x output norm)", routing.saliency),
    )
    for title, values in panels:
        console.print(f"\n{title} - dark: little, yellow: most; '·' never chosen")
        shades = colours(normalised(values))
        for row, layer in enumerate(routing.layers):
            line = Text(f"layer {layer:>3} ")
            for expert in range(routing.expert_count):
                if routing.counts[row, expert] == 0:
                    line.append("·", style="dim")
                else:
                    r, g, b = shades[row, expert]
                    line.append("█", style=f"rgb({r},{g},{b})")
            console.print(line)
    never = routing.never_chosen()
    total_never = sum(len(experts) for experts in never)
    console.print()
    if total_never:
        where = "; ".join(
            f"layer {layer}: {', '.join(map(str, experts))}"
            for layer, experts in zip(routing.layers, never, strict=True)
            if experts
        )
        console.print(f"Never chosen: {total_never} expert(s) ({where})")
    else:
        console.print("Never chosen: none, every expert of every layer was used")
    share = routing.frequency()
    top = divmod(int(share.argmax()), routing.expert_count)
    used = share > 0
    low = divmod(int(np.where(used, share, np.inf).argmin()), routing.expert_count)
    for label, (row, expert) in (("Most used", top), ("Least used (of those chosen)", low)):
        console.print(
            f"{label}: layer {routing.layers[row]} expert {expert}, chosen by {share[row, expert]:.1%} "
            f"of tokens (REAP saliency {routing.saliency[row, expert]:.3g})"
        )


@moe.command("prune")
@click.argument("model")
@calibration_option("Notes folder (or file) whose routing decides which experts stay.")
@click.option("--keep", required=True, type=float, help="Fraction of each layer's experts to keep, e.g. 0.5.")
@click.option("--method", default="reap", show_default=True, help="reap (saliency) or frequency.")
@click.option("--name", help="Name of the pruned model in the store.")
@click.pass_context
def prune(ctx, model, notes_path, keep, method, name):
    """Drop the experts MODEL's router uses least on your notes; the smaller model joins the store."""
    from quantize.moe.prune import check_method, keep_count, plan_pruning, prune_gguf
    from quantize.moe.routing import measure_routing, moe_shape
    from quantize.notes_text import read_notes
    from quantize.quant_types import FLOAT_TYPES

    check_method(method)
    source_name, path = model_path(ctx, model)
    shape = moe_shape(path)
    count = keep_count(shape, keep)
    notes = read_notes(notes_path)
    store = assistant_from(ctx).models
    default_name = f"{source_name}-{method}-{count}of{shape.expert_count}"
    with new_model(store, None, name, default_name, force=False) as (tmp, final_name, final_path):
        say(f"Routing {len(notes.notes)} note file(s) through {source_name}...")
        text = "\n\n".join(note.text for note in notes.notes)
        routing = measure_routing(path, text, min_tokens=MIN_CALIBRATION_TOKENS)
        plan = plan_pruning(routing, count, method)
        say(f"Writing {count} of {shape.expert_count} experts per layer...")
        prune_gguf(path, tmp, shape, plan)
    before, after = path.stat().st_size, final_path.stat().st_size
    click.echo(
        f"Kept {count} of {shape.expert_count} experts in each of {len(plan.kept)} layers ({method}, "
        f"{routing.tokens} tokens of notes); removed:"
    )
    for layer, kept in plan.kept.items():
        removed = sorted(set(range(shape.expert_count)) - set(kept))
        click.echo(f"  layer {layer:>3}: {', '.join(map(str, removed)) or 'none'}")
    click.echo(
        f"Wrote {final_path} ({human_bytes(before)} -> {human_bytes(after)}); in the store as {final_name}."
    )
    if inspect_gguf(final_path).quantization.removeprefix("ALL_") in FLOAT_TYPES:
        click.echo(f"Then `lantern quantize {final_name} --type Q4_K_M` as usual.")


from app.cli.moe_split import split  # noqa: E402  (each command module adds itself here)

moe.add_command(split)
