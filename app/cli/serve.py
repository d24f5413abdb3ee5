"""`lantern serve`, `lantern pair` and `lantern devices`: phone and browser access."""

from __future__ import annotations

import json
from pathlib import Path

import click

from app.cli.context import assistant_from
from app.config import SPECULATIVE_CHOICES


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Listen address; loopback unless you mean it."
)
@click.option("--port", default=8484, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--slots", default=4, show_default=True, type=click.IntRange(1, 16), help="Answers decoded together."
)
@click.option("--allow-host", multiple=True, help="Another Host header to accept (e.g. a LAN name).")
@click.option("--cors-origin", multiple=True, help="A web origin allowed to call the API from a browser.")
@click.option("--model", "-m", help="Model to serve: a store name or a .gguf file (default from the config).")
@click.option(
    "--speculative",
    type=click.Choice(SPECULATIVE_CHOICES),
    help="Guess tokens from the chat itself, checked by the model (same answers). Default: config.",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Unlock an encrypted data home with this key file at start; phones never see it.",
)
@click.pass_context
def serve(ctx, host, port, slots, allow_host, cors_origin, model, speculative, key_file):
    """Serve the OpenAI-compatible API and the web client (reach it over an SSH tunnel)."""
    import uvicorn

    from android_client_api.app import create_app
    from android_client_api.service import LanternService
    from android_client_api.settings import ServerSettings

    settings = ServerSettings(
        host=host,
        port=port,
        slots=slots,
        allowed_hosts=(*ServerSettings().allowed_hosts, *allow_host, *_host_names(host)),
        cors_origins=tuple(cors_origin),
        speculative=speculative,
    )
    if not settings.is_loopback:
        click.echo(
            f"warning: listening on {host}, beyond this computer. Anyone who can reach it and holds a "
            "token can use your model and notes; prefer 127.0.0.1 and an SSH tunnel.",
            err=True,
        )
    if key_file is not None:
        ctx.find_root().meta["key_file"] = key_file
    assistant = assistant_from(ctx)
    assistant.unlock()  # once, now: a request never waits for (or asks) a passphrase
    assistant.key.stop_asking()
    service = LanternService.start(assistant, settings, model)
    click.echo(f"Lantern serves {service.model_name} at {settings.url} (Ctrl+C stops).", err=True)
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
    finally:
        service.close()


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help='Print {"name", "token", "url"}.')
@click.option("--port", default=8484, show_default=True, type=click.IntRange(1, 65535))
@click.pass_context
def pair(ctx, name, as_json, port):
    """Create a token for the device NAME and show it as a QR code (URL and token)."""
    from android_client_api.service import device_registry

    token = device_registry(assistant_from(ctx)).pair(name)
    url = f"http://127.0.0.1:{port}"
    if as_json:
        click.echo(json.dumps({"name": name, "token": token, "url": url}))
        return
    link = f"{url}/#token={token}"
    click.echo(f"Paired {name}. Its token (shown once; only a hash is kept):\n\n  {token}\n")
    click.echo(f"Scan to open the web client through your tunnel ({url}):\n")
    import io

    import qrcode

    code = qrcode.QRCode(border=1)
    code.add_data(link)
    buffer = io.StringIO()
    code.print_ascii(out=buffer, invert=True)
    click.echo(buffer.getvalue())


@click.group()
def devices() -> None:
    """Paired devices: list them, revoke one."""


@devices.command("list")
@click.pass_context
def devices_list(ctx):
    from android_client_api.service import device_registry

    rows = device_registry(assistant_from(ctx)).list()
    if not rows:
        click.echo("No paired devices. Pair one with 'lantern pair NAME'.")
    for d in rows:
        click.echo(f"{d.name:<24} paired {d.paired_at}{'  (revoked)' if d.revoked else ''}")


@devices.command("revoke")
@click.argument("name")
@click.pass_context
def devices_revoke(ctx, name):
    from android_client_api.service import device_registry

    device_registry(assistant_from(ctx)).revoke(name)
    click.echo(f"Revoked {name}; its token no longer works.")


def _host_names(host: str) -> list[str]:
    """The Host header values a client uses for this listen address (IPv6 in brackets)."""
    if host in ("0.0.0.0", "::"):
        return []
    return [f"[{host}]"] if ":" in host else [host]
