"""`lantern chat`: the line-based chat, for terminals without the TUI."""

from __future__ import annotations

import click

from app.cli.context import assistant_from
from app.cli.options import (
    model_or_twin,
    pick_conversation,
    refuse_local_only_options,
    with_generation_options,
)


@click.command()
@with_generation_options
@click.pass_context
def chat(
    ctx, model, twin, max_tokens, temperature, top_p, seed, speculative, continue_, conversation_id, no_memory
):
    """A line-based chat for terminals without the TUI. /help lists commands."""
    from app.cli.repl import run_repl

    model = model_or_twin(model, twin)
    assistant = assistant_from(ctx)
    settings = assistant.settings(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, speculative=speculative
    )
    conversation = pick_conversation(assistant, continue_, conversation_id)
    refuse_local_only_options(assistant, model, conversation, speculative)
    if model:
        assistant.engine(model)  # a wrong --model (name or file) fails now, not at the first question
    run_repl(assistant, conversation, model, settings, use_memory=not no_memory)
