"""`lantern models add-remote` and the remote rows of `models list`, `info` and `rm`: models served
by an OpenAI-compatible engine elsewhere."""

from __future__ import annotations

import os
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

import click

from app.assistant import Assistant
from app.cli.context import assistant_from
from app.model_store import RemoteModel, normalise_url
from app.remote_engine import RemoteEngine


@click.command("add-remote")
@click.argument("name")
@click.argument("url")
@click.option("--model", "model_id", default="", help="The engine's model id (default: the first it lists).")
@click.option("--api-key-env", help="The environment variable that holds the API key (never stored).")
@click.option(
    "--context", "context_length", type=int, help="Context window in tokens, when the engine does not say."
)
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify the engine's TLS certificate against this CA file.",
)
@click.option("--no-check", is_flag=True, help="Register it without asking the engine now (it may be down).")
@click.pass_context
def models_add_remote(ctx, name, url, model_id, api_key_env, context_length, ca_bundle, no_check):
    """Register NAME as a model served at URL by any OpenAI-compatible engine (llama-server, vLLM,
    SGLang, Ollama, TGI, another Lantern); ask, chat, the TUI and serve then use it like a local one."""
    assistant = assistant_from(ctx)
    assistant.models.check_free(name)
    url = normalise_url(url)
    context_note = f"context {context_length} tokens (configured)" if context_length else ""
    if not no_check:
        probe = RemoteModel(name, url, model_id, api_key_env, context_length, _text(ca_bundle))
        engine = RemoteEngine(probe, assistant.config.remote, fallback_context=0)
        try:
            model_id = engine.model
            if engine.context_length:
                context_note = f"context {engine.context_length} tokens"
        finally:
            engine.close()
    entry = assistant.models.add_remote(
        name,
        url,
        model_id,
        api_key_env=api_key_env,
        context_length=context_length,
        ca_bundle=ca_bundle,
    )
    if _is_plain_http_off_this_machine(entry.url):
        click.echo(
            f"warning: {entry.url} is plain http to another machine; prompts and answers cross the "
            "network unencrypted (use https, or a tunnel: 'lantern tunnel')",
            err=True,
        )
    details = ", ".join(d for d in (f"model {entry.model}" if entry.model else "", context_note) if d)
    click.echo(f"Added remote model {entry.name}: {entry.url}" + (f" ({details})" if details else "") + ".")


def remote_list_rows(assistant: Assistant) -> list[str]:
    """`models list` lines for remote models; no network: the engines are not asked."""
    default = assistant.config.default_model
    lines = []
    for m in assistant.models.list_remote():
        marker = "*" if m.name == default else " "
        context = f"ctx {m.context_length}" if m.context_length else "ctx from engine"
        lines.append(f"{marker} {m.name:<32} remote     {m.url}  {m.model or '-'}  {context}{_key_note(m)}")
    return lines


def remote_list_json(assistant: Assistant) -> list[dict]:
    default = assistant.config.default_model
    return [
        {
            "name": m.name,
            "kind": "remote",
            "url": m.url,
            "model": m.model,
            "context_length": m.context_length,
            "api_key_env": m.api_key_env,
            "path": None,
            "bundled": False,
            "default": m.name == default,
            "size": None,
            "ready": True,
        }
        for m in assistant.models.list_remote()
    ]


def remote_info_rows(assistant: Assistant, entry: RemoteModel, check: bool) -> list[tuple[str, str]]:
    """`models info` for a remote model; with ``check``, the engine is asked for its window."""
    context = f"{entry.context_length} tokens (configured)" if entry.context_length else "from the engine"
    if check:
        engine = RemoteEngine(entry, assistant.config.remote, assistant.config.runtime.context_length)
        try:
            context = f"{engine.context_length} tokens (engine answered)"
        finally:
            engine.close()
    key = _key_note(entry).strip() or "none"
    return [
        ("name", entry.name + (" (default)" if entry.name == assistant.config.default_model else "")),
        ("kind", "remote (an OpenAI-compatible engine)"),
        ("url", entry.url),
        ("model", entry.model or "(the engine's only one)"),
        ("context length", context),
        ("api key", key),
        ("tls", f"verified with {entry.ca_bundle}" if entry.ca_bundle else "verified (system CAs)"),
        ("added", entry.added_at),
    ]


def _key_note(entry: RemoteModel) -> str:
    if not entry.api_key_env:
        return ""
    state = "set" if os.environ.get(entry.api_key_env) else "not set"
    return f"  key ${entry.api_key_env} ({state})"


def _is_plain_http_off_this_machine(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ip_address(host).is_loopback
    except ValueError:
        return True


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None
