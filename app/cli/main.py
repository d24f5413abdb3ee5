"""The `lantern` group: the entry point, the TUI when no command is given, and every command group."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from app.assistant import Assistant
from app.cli.ask import ask
from app.cli.chat import chat
from app.cli.context import assistant_from
from app.cli.conversations import conversations
from app.cli.convert import convert, eval_group, quantize
from app.cli.encryption import init, passphrase
from app.cli.eval import answers
from app.cli.memory import memory
from app.cli.models import models
from app.cli.moe import moe
from app.cli.serve import devices, pair, serve
from app.cli.tunnel import tunnel
from app.cli.twin import twin
from app.errors import LanternError


class _LanternGroup(click.Group):
    """Turns a LanternError anywhere below into one clean line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LanternError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_LanternGroup, invoke_without_command=True)
@click.version_option(package_name="lantern")
@click.option("--model", "-m", help="Open the TUI with this model: a store name or a .gguf file.")
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Unlock an encrypted home with this key file (else LANTERN_KEY_FILE, LANTERN_PASSPHRASE, a prompt).",
)
@click.pass_context
def cli(ctx: click.Context, model: str | None, key_file: Path | None) -> None:
    """Lantern: an offline assistant over local GGUF models. With no command, opens the TUI."""
    if model and ctx.invoked_subcommand is not None:
        raise LanternError(
            f"--model before a command only opens the TUI; put it after: lantern {ctx.invoked_subcommand} "
            "--model ..."
        )
    if key_file is not None:
        ctx.meta["key_file"] = key_file
    if ctx.invoked_subcommand is None:
        from tui.app import run_tui

        try:
            assistant = assistant_from(ctx, ask=_ask_in_the_tui)
            ask_passphrase = _unlock_unless_typed(assistant)
            assistant.key.stop_asking()  # from here on a locked home is an error, never a prompt
        except LanternError as exc:
            run_tui(None, startup_problem=str(exc))  # a clear screen, not a traceback
            raise SystemExit(1) from None
        run_tui(assistant, model=model, ask_passphrase=ask_passphrase)


class _TypedInTheTui(Exception):
    """The passphrase has to be typed: the TUI asks for it on its passphrase screen."""


def _ask_in_the_tui(_prompt: str) -> str:
    raise _TypedInTheTui


def _unlock_unless_typed(assistant: Assistant) -> bool:
    """Unlock an encrypted home now from --key-file, LANTERN_KEY_FILE or LANTERN_PASSPHRASE;
    True when none is given and the passphrase must be typed (the TUI's passphrase screen)."""
    try:
        assistant.unlock()
    except _TypedInTheTui:
        return True
    return False


for command in (ask, chat, models, conversations, memory, convert, quantize, eval_group, twin, moe):
    cli.add_command(command)
for command in (serve, pair, devices, tunnel, init, passphrase):
    cli.add_command(command)
eval_group.add_command(answers)


def main() -> None:
    # Undecodable bytes in a pipe should reach our UTF-8 check, not crash the writer.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        cli.main(prog_name="lantern")
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        sys.exit(130)
