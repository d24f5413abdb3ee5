"""`lantern chat`: a plain line-based chat with input history, for any terminal or pipe."""

from __future__ import annotations

import atexit
import sys
from pathlib import Path

import click

from app.assistant import Assistant
from app.cli.formatting import format_citations
from app.conversations import Conversation
from app.engine import GenerationSettings
from app.errors import LanternError
from app.private_files import read_private, write_private
from app.remote_engine import EngineCutError
from app.sealing import HISTORY_FILE
from rag.crypto import Cipher

HISTORY_LINES = 1000

HELP = """Commands:
  /new     start a new conversation
  /id      show this conversation's id
  /help    this text
  /exit    leave (Ctrl-D works too)
Ctrl-C stops an answer that is being written."""


def _enable_history(path: Path, cipher: Cipher | None) -> None:
    """Up-arrow history across sessions, kept in the data home (sealed when it is encrypted)."""
    try:
        import readline
    except ImportError:  # not every Python build has it; the REPL works without
        return
    if path.exists():
        try:
            for line in read_private(path, cipher).decode("utf-8", errors="replace").splitlines():
                readline.add_history(line)
        except LanternError as exc:
            click.echo(f"warning: input history not loaded: {exc}", err=True)
    readline.set_history_length(HISTORY_LINES)

    def save() -> None:
        count = readline.get_current_history_length()
        lines = [readline.get_history_item(i) or "" for i in range(1, count + 1)]
        try:
            write_private(path, ("\n".join(lines[-HISTORY_LINES:]) + "\n").encode("utf-8"), cipher)
        except OSError:
            pass

    atexit.register(save)


def run_repl(
    assistant: Assistant,
    conversation: Conversation | None,
    model: str | None,
    settings: GenerationSettings,
    use_memory: bool = True,
) -> None:
    interactive = sys.stdin.isatty()
    if interactive:
        _enable_history(assistant.home.root / HISTORY_FILE, assistant.key.cipher())
        name = model or (conversation.model if conversation else assistant.config.default_model)
        click.echo(f"Lantern chat with {name}. /help for commands, Ctrl-D to leave.")
        if conversation:
            click.echo(f"Continuing '{conversation.title}' ({len(conversation.messages)} messages).")
    prompt_text = "you> " if interactive else ""
    while True:
        try:
            line = input(prompt_text)
        except EOFError:
            if interactive:
                click.echo()
            return
        except KeyboardInterrupt:
            click.echo()
            continue
        except UnicodeDecodeError:
            click.echo("error: that line is not valid UTF-8; it was not sent", err=True)
            continue
        command = line.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            return
        if command == "/help":
            click.echo(HELP)
            continue
        if command == "/new":
            conversation = None
            click.echo("New conversation.")
            continue
        if command == "/id":
            click.echo(conversation.id if conversation else "(not saved yet: ask something first)")
            continue
        try:
            turn = assistant.ask(
                line, conversation=conversation, model=model, settings=settings, use_memory=use_memory
            )
        except LanternError as exc:
            click.echo(f"error: {exc}", err=True)
            continue
        stream = iter(turn)
        try:
            for piece in stream:
                click.echo(piece, nl=False)
        except KeyboardInterrupt:
            stream.close()
            click.echo(" [stopped]", nl=False)
        except EngineCutError as exc:  # the partial answer is saved, marked as cut
            click.echo(" [cut]", nl=False)
            click.echo(f"\nerror: {exc}", err=True)
        except LanternError as exc:
            click.echo(f"\nerror: {exc}", err=True)
        click.echo()
        if turn.citations:
            click.echo(format_citations(turn.citations))
        if turn.result is not None and turn.result.dropped_messages:
            click.echo(
                f"(the {turn.result.dropped_messages} oldest messages were left out to fit "
                "the context window)",
                err=True,
            )
        conversation = assistant.conversations.get(turn.conversation.id) if turn.conversation else None
