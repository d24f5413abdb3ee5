"""`lantern models ...`: list, add, inspect and remove models."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from app.cli.context import assistant_from
from app.cli.formatting import describe_model
from app.sizes import human_bytes


@click.group()
def models() -> None:
    """List, add, inspect and remove models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_list(ctx, as_json):
    """The models in the store, then packaged ones assembled on first use; * marks the default."""
    assistant = assistant_from(ctx)
    entries = assistant.models.list()
    unassembled = assistant.models.not_yet_assembled()
    default = assistant.config.default_model
    if as_json:
        listed = [
            {
                "name": e.name,
                "path": str(e.path),
                "bundled": e.bundled,
                "default": e.name == default,
                "size": e.path.stat().st_size if e.path.is_file() else None,
                "ready": True,
            }
            for e in entries
        ]
        # ready False: the model's package is installed, and its first use assembles the file.
        listed += [
            {
                "name": m.name,
                "path": None,
                "bundled": False,
                "default": m.name == default,
                "size": None,
                "ready": False,
            }
            for m in unassembled
        ]
        click.echo(json.dumps(listed))
        return
    if not entries and not unassembled:
        click.echo("No models yet. Add one with 'lantern models add PATH'.")
        return
    for e in entries:
        size = human_bytes(e.path.stat().st_size) if e.path.is_file() else "missing"
        quant = e.summary.quantization if e.summary else ""
        source = "bundled" if e.bundled else "packaged" if e.packaged else "added"
        marker = "*" if e.name == default else " "
        click.echo(f"{marker} {e.name:<32} {quant:<8} {size:>10}  {source}")
    for m in unassembled:
        marker = "*" if m.name == default else " "
        click.echo(
            f"{marker} {m.name:<32} {'':<8} {'-':>10}  packaged: {m.description}, assembled on first use"
        )


@models.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Name in the store (default: from the file name).")
@click.pass_context
def models_add(ctx, path, name):
    """Validate a GGUF file and copy it into the store."""
    entry = assistant_from(ctx).models.add(path, name)
    click.echo(f"Added {entry.name} ({describe_model(entry.summary)}).")


@models.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_info(ctx, name, as_json):
    """Architecture, size, quantization, context and chat template of a model."""
    assistant = assistant_from(ctx)
    entry, summary = assistant.models.info(name)
    if as_json:
        data = dataclasses.asdict(summary)
        data.update(
            name=entry.name,
            path=str(entry.path),
            bundled=entry.bundled,
            chat_template_source=summary.chat_template_source,
        )
        click.echo(json.dumps(data))
        return
    params = summary.parameter_count
    rows = [
        ("name", entry.name + (" (default)" if entry.name == assistant.config.default_model else "")),
        ("file", f"{entry.path}" + (" (bundled with Lantern)" if entry.bundled else "")),
        ("architecture", summary.architecture),
        ("parameters", f"{params / 1e6:.1f}M ({params:,})"),
        ("quantization", summary.quantization),
        ("context length", f"{summary.context_length} tokens" if summary.context_length else "unknown"),
        ("file size", f"{human_bytes(summary.file_size)} ({summary.file_size:,} bytes)"),
        ("gguf", f"version {summary.gguf_version}, {summary.tensor_count} tensors"),
        ("chat template", summary.chat_template_source),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':<16} {value}")


@models.command("rm")
@click.argument("name")
@click.pass_context
def models_rm(ctx, name):
    """Remove a model (bundled and linked files are never deleted, only unregistered)."""
    entry = assistant_from(ctx).models.remove(name)
    click.echo(f"Removed {entry.name}.")
