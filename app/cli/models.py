"""`lantern models ...`: list, add, inspect and remove models."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from app.cli.context import assistant_from
from app.cli.formatting import active_rows, describe_model, describe_ram, facts_json
from app.cli.remote_models import models_add_remote, remote_info_rows, remote_list_json, remote_list_rows
from app.errors import LanternError
from app.model_facts import estimate_ram
from app.model_store import ModelEntry
from app.sizes import human_bytes, human_count


@click.group()
def models() -> None:
    """List, add, inspect and remove models."""


models.add_command(models_add_remote)


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_list(ctx, as_json):
    """The models in the store, then packaged ones assembled on first use; * marks the default,
    MoE a Mixture-of-Experts model.

    RAM is an upper-bound estimate at the configured context: the weights plus an F16 KV cache.
    """
    assistant = assistant_from(ctx)
    entries = [_described(assistant, e) for e in assistant.models.list()]
    unassembled = assistant.models.not_yet_assembled()
    default = assistant.config.default_model
    context = assistant.config.runtime.context_length
    if as_json:
        rows = []
        for e in entries:
            row = {
                "name": e.name,
                "kind": "local",
                "path": str(e.path),
                "bundled": e.bundled,
                "default": e.name == default,
                "size": e.path.stat().st_size if e.path.is_file() else None,
                "ready": True,
            }
            if e.facts is not None:
                row.update(facts_json(e.facts, estimate_ram(e.facts, context), brief=True))
            rows.append(row)
        # ready False: the model's package is installed, and its first use assembles the file.
        rows += [
            {
                "name": m.name,
                "kind": "local",
                "path": None,
                "bundled": False,
                "default": m.name == default,
                "size": None,
                "ready": False,
            }
            for m in unassembled
        ]
        click.echo(json.dumps(rows + remote_list_json(assistant)))
        return
    remote = remote_list_rows(assistant)
    if not entries and not unassembled and not remote:
        click.echo("No models yet. Add one with 'lantern models add PATH'.")
        return
    for e in entries:
        size = human_bytes(e.path.stat().st_size) if e.path.is_file() else "missing"
        quant = e.summary.quantization if e.summary else ""
        source = "bundled" if e.bundled else "packaged" if e.packaged else "added"
        marker = "*" if e.name == default else " "
        f = e.facts
        if f is None:
            click.echo(f"{marker} {e.name:<32} {'':<10} {'':>20} {quant:<8} {size:>10} {'':>14}  {source}")
            continue
        total = estimate_ram(f, context).total_bytes
        ram = f"~{human_bytes(total)} RAM" if total is not None else "RAM unknown"
        params = human_count(f.parameter_count)
        if f.is_moe:
            params += f" ({human_count(f.active_parameter_count)} act.)"
        moe = f"  MoE {f.expert_used_count}/{f.expert_count} experts" if f.is_moe else ""
        click.echo(
            f"{marker} {e.name:<32} {f.architecture:<10} {params:>20} {quant:<8} {size:>10} {ram:>14}  "
            f"{source}{moe}"
        )
    for m in unassembled:
        marker = "*" if m.name == default else " "
        click.echo(
            f"{marker} {m.name:<32} {'':<10} {'':>20} {'':<8} {'-':>10} {'':>14}  "
            f"packaged: {m.description}, assembled on first use"
        )
    for line in remote:
        click.echo(line)


def _described(assistant, entry: ModelEntry) -> ModelEntry:
    """The entry with its facts read (once, then cached); a missing or unreadable file is still
    listed, without them."""
    try:
        return assistant.models.described(entry.name)
    except LanternError:
        return entry


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
@click.option("--check", is_flag=True, help="A remote model: ask its engine now for its context window.")
@click.pass_context
def models_info(ctx, name, as_json, check):
    """Architecture, parameters (active per token for MoE), size, quantization, context, chat template
    and an estimate of RAM at the configured context (an upper bound: weights plus an F16 KV cache).
    A remote model: its URL, model id, API key variable and where its context length comes from."""
    assistant = assistant_from(ctx)
    remote = assistant.models.remote(name)
    if remote is not None:
        rows = remote_info_rows(assistant, remote, check)
        if as_json:
            click.echo(json.dumps({label.replace(" ", "_"): value for label, value in rows}))
            return
        for label, value in rows:
            click.echo(f"{label + ':':<18} {value}")
        return
    entry = assistant.models.described(name)
    summary, facts = entry.summary, entry.facts
    ram = estimate_ram(facts, assistant.config.runtime.context_length)
    if as_json:
        data = dataclasses.asdict(summary)
        data.update(
            name=entry.name,
            path=str(entry.path),
            bundled=entry.bundled,
            chat_template_source=summary.chat_template_source,
        )
        data.update(facts_json(facts, ram))
        click.echo(json.dumps(data))
        return
    params = summary.parameter_count
    rows = [
        ("name", entry.name + (" (default)" if entry.name == assistant.config.default_model else "")),
        ("file", f"{entry.path}" + (" (bundled with Lantern)" if entry.bundled else "")),
        ("architecture", summary.architecture),
        ("parameters", f"{params / 1e6:.1f}M ({params:,})"),
        *active_rows(facts),
        ("quantization", summary.quantization),
        ("context length", f"{summary.context_length} tokens" if summary.context_length else "unknown"),
        ("file size", f"{human_bytes(summary.file_size)} ({summary.file_size:,} bytes)"),
        ("RAM estimate", describe_ram(ram)),
        ("gguf", f"version {summary.gguf_version}, {summary.tensor_count} tensors"),
        ("chat template", summary.chat_template_source),
    ]
    if facts.sliding_window:
        window = f"{facts.sliding_window} tokens (not counted: the RAM estimate is an upper bound)"
        rows.insert(-2, ("sliding window", window))
    for label, value in rows:
        click.echo(f"{label + ':':<18} {value}")


@models.command("rm")
@click.argument("name")
@click.pass_context
def models_rm(ctx, name):
    """Remove a model (bundled and linked files are never deleted, only unregistered; a remote
    model is only forgotten, its engine untouched)."""
    entry = assistant_from(ctx).models.remove(name)
    click.echo(f"Removed {entry.name}.")
