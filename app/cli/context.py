"""What every CLI command shares: the one Assistant of a command run, and JSON shapes."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from app.assistant import Assistant
from rag.retrieval import RetrievalHit


def _ask_passphrase(prompt: str) -> str:
    return click.prompt(prompt.rstrip(": "), hide_input=True, err=True)


def assistant_from(ctx: click.Context, ask: Callable[[str], str] = _ask_passphrase) -> Assistant:
    """The Assistant for this command run, created on first use and closed when it ends.
    ``ask``: how the passphrase of an encrypted home is asked for, in a terminal."""
    root = ctx.find_root()
    if root.obj is None:
        ask_secret = ask if sys.stdin.isatty() else None
        root.obj = Assistant(ask_secret=ask_secret, key_file=root.meta.get("key_file"))
        root.call_on_close(root.obj.close)
    return root.obj


def hit_json(hit: RetrievalHit) -> dict:
    return {"source": hit.source, "heading": hit.heading, "text": hit.text, "score": hit.score}
