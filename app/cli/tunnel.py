"""`lantern tunnel guide | up | status`: reach `lantern serve` from a phone through SSH."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from app.cli.context import assistant_from
from app.errors import LanternError


def _state_file(ctx) -> Path:
    return assistant_from(ctx).home.root / "tunnel.json"


@click.group()
def tunnel() -> None:
    """SSH tunnels to `lantern serve`; keys only, never passwords."""


@tunnel.command("guide")
@click.option(
    "--server", default="you@your-server.example", show_default=True, help="A reachable SSH server."
)
@click.option(
    "--home", "home_host", default="you@home-computer", show_default=True, help="This computer, if reachable."
)
@click.option("--port", default=8484, show_default=True, help="Where `lantern serve` listens.")
@click.option("--remote-port", default=18484, show_default=True, help="Port on the server's loopback.")
def tunnel_guide(server, home_host, port, remote_port):
    """Print the exact ssh commands for a phone, a laptop, and for exposing home via a server."""
    from tunnel.commands import direct_command, phone_command

    click.echo(f"""Lantern listens on 127.0.0.1:{port} only. Reach it through SSH, with keys:

1. This computer is reachable over SSH (same network, or a port you opened):
     on the phone (Termux) or laptop:   {direct_command(home_host, port)}
     then open http://127.0.0.1:{port}/ there, or point an OpenAI client at http://127.0.0.1:{port}/v1

2. It is not: keep a reverse tunnel to a server you can reach, from this computer:
     lantern tunnel up {server} --remote-port {remote_port} --port {port}
       (runs: ssh -N -R 127.0.0.1:{remote_port}:127.0.0.1:{port} {server}, reconnecting on failure)
     on the phone or laptop:            {phone_command(server, remote_port, port)}
     then open http://127.0.0.1:{port}/ there.

Pair each device once with 'lantern pair NAME'; its QR code holds the URL and the token.""")


@tunnel.command("up")
@click.argument("destination")
@click.option("--remote-port", default=18484, show_default=True)
@click.option("--port", "local_port", default=8484, show_default=True, help="Where `lantern serve` listens.")
@click.option("--ssh-port", default=22, show_default=True)
@click.option(
    "--identity", "-i", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Private key."
)
@click.option(
    "--known-hosts", type=click.Path(dir_okay=False, path_type=Path), help="known_hosts file to use."
)
@click.pass_context
def tunnel_up(ctx, destination, remote_port, local_port, ssh_port, identity, known_hosts):
    """Keep a reverse tunnel to DESTINATION (USER@HOST) open, reconnecting with backoff."""
    from tunnel.commands import TunnelSpec
    from tunnel.supervisor import TunnelSupervisor

    try:
        spec = TunnelSpec(destination, remote_port, local_port, ssh_port, identity, known_hosts)
    except ValueError as exc:
        raise LanternError(str(exc)) from None
    click.echo(
        f"Keeping 127.0.0.1:{remote_port} on {destination} connected to 127.0.0.1:{local_port} "
        "(Ctrl+C stops)."
    )
    TunnelSupervisor(spec, _state_file(ctx), log=lambda line: click.echo(line, err=True)).run()


@tunnel.command("status")
@click.pass_context
def tunnel_status(ctx):
    """Whether the tunnel is up, since when, and how often it reconnected."""
    from tunnel.supervisor import read_state

    state = read_state(_state_file(ctx))
    if state is None:
        click.echo("No tunnel has run yet. Start one with 'lantern tunnel up USER@HOST'.")
        return
    alive = state.supervisor_pid is not None and _pid_alive(state.supervisor_pid)
    shown = state.state if alive or state.state == "stopped" else "stopped (the supervisor is gone)"
    ago = int(time.time() - state.since)
    click.echo(
        f"{shown}: 127.0.0.1:{state.remote_port} on {state.destination} -> 127.0.0.1:{state.local_port}, "
        f"for {ago} s, {state.reconnects} reconnects"
        + (f", last error: {state.last_error}" if state.last_error else "")
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
