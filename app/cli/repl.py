"""`lantern chat`: a plain line-based chat with input history, for any terminal or pipe."""

from __future__ import annotations

import sys

import click

from app.assistant import Assistant
from app.cli.formatting import format_citations
from app.conversations import Conversation
from app.engine import GenerationSettings
from app.errors import LanternError

HELP = """Commands:
  /new     start a new conversation
  /id      show this conversation's id
  /help    this text
  /exit    leave (Ctrl-D works too)
Ctrl-C stops an answer that is being written."""


def _enable_history(path) -> None:
    try:
        import readline
    except ImportError:  # not every Python build has it; the REPL works without
        return
    try:
        readline.read_history_file(path)
    except (FileNotFoundError, OSError):
        pass
    readline.set_history_length(1000)
    import atexit
    import os

    def save() -> None:
        try:
            readline.write_history_file(path)
            os.chmod(path, 0o600)
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
        _enable_history(str(assistant.home.root / "chat_history"))
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
