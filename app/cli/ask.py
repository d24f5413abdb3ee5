"""`lantern ask`: one answer, streamed to stdout (or one JSON object)."""

from __future__ import annotations

import json
import sys

import click

from app.cli.context import assistant_from, hit_json
from app.cli.formatting import format_citations
from app.cli.options import (
    model_or_twin,
    pick_conversation,
    refuse_local_only_options,
    with_generation_options,
)
from app.errors import LanternError
from app.remote_engine import EngineCutError


def _read_prompt(prompt: str | None) -> str:
    if prompt is not None and prompt != "-":
        return prompt
    if sys.stdin.isatty():
        raise LanternError("no prompt given; pass it as an argument or pipe it on stdin")
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LanternError(
            f"the prompt on stdin is not valid UTF-8 (bad byte at position {exc.start}); "
            "convert it to UTF-8 and try again"
        ) from None


def _trim_note(dropped: int) -> str:
    return f"note: the {dropped} oldest messages were left out to fit the context window"


@click.command()
@click.argument("prompt", required=False)
@with_generation_options
@click.option("--system", help="System prompt for a new conversation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.pass_context
def ask(
    ctx,
    prompt,
    model,
    twin,
    max_tokens,
    temperature,
    top_p,
    seed,
    speculative,
    continue_,
    conversation_id,
    no_memory,
    system,
    as_json,
):
    """Answer PROMPT (or stdin), streaming the answer to stdout."""
    model = model_or_twin(model, twin)
    prompt = _read_prompt(prompt)
    assistant = assistant_from(ctx)
    settings = assistant.settings(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, speculative=speculative
    )
    conversation = pick_conversation(assistant, continue_, conversation_id)
    refuse_local_only_options(assistant, model, conversation, speculative)
    turn = assistant.ask(
        prompt,
        conversation=conversation,
        model=model,
        system_prompt=system,
        settings=settings,
        use_memory=not no_memory,
    )
    try:
        if as_json:
            for _ in turn:
                pass
        else:
            for piece in turn:
                click.echo(piece, nl=False)
            click.echo()
    except EngineCutError:
        if not as_json:  # the partial answer stays on screen, marked like the saved one
            click.echo("\n[cut]")
        raise
    if not as_json and turn.citations:
        click.echo(format_citations(turn.citations))
    result = turn.result
    if result is not None and result.dropped_messages and not as_json:
        click.echo(_trim_note(result.dropped_messages), err=True)
    if as_json and result is not None:
        click.echo(
            json.dumps(
                {
                    "text": result.text,
                    "model": turn.model,
                    "conversation_id": turn.conversation.id if turn.conversation else None,
                    "finish_reason": result.finish_reason,
                    "usage": {
                        "prompt_tokens": result.prompt_tokens,
                        "prompt_tokens_evaluated": result.prompt_tokens_evaluated,
                        "completion_tokens": result.completion_tokens,
                        "draft_tokens": result.draft_tokens,
                        "accepted_draft_tokens": result.accepted_draft_tokens,
                    },
                    "dropped_messages": result.dropped_messages,
                    "citations": [hit_json(hit) for hit in turn.citations],
                    "timings": {
                        "time_to_first_token_s": round(result.time_to_first_token_s, 4),
                        "total_s": round(result.total_s, 4),
                        "decode_tokens_per_s": round(result.decode_tokens_per_s, 2),
                    },
                },
                ensure_ascii=False,
            )
        )
