"""What `ask` and `chat` share: the generation options and how they pick a model and a conversation."""

from __future__ import annotations

import click

from app.assistant import Assistant
from app.config import SPECULATIVE_CHOICES
from app.conversations import Conversation
from app.errors import LanternError

generation_options = [
    click.option("--model", "-m", help="Model name from 'lantern models list', or a path to a .gguf file."),
    click.option(
        "--twin", help="Answer as your twin (from 'lantern twin list'): its base model plus adapter."
    ),
    click.option("--max-tokens", type=int, help="Longest answer, in tokens."),
    click.option("--temperature", "-t", type=float, help="0 for the most likely answer."),
    click.option("--top-p", type=float, help="Nucleus sampling cut-off, in (0, 1]."),
    click.option("--seed", type=int, help="Fix the random seed for a repeatable answer."),
    click.option(
        "--speculative",
        type=click.Choice(SPECULATIVE_CHOICES),
        help="Guess tokens from the chat itself, checked by the model (same answers). Default: config.",
    ),
    click.option(
        "--continue", "-c", "continue_", is_flag=True, help="Continue the most recent conversation."
    ),
    click.option(
        "--conversation", "--cid", "conversation_id", help="Continue the conversation with this id."
    ),
    click.option("--no-memory", is_flag=True, help="Do not look in your notes for this answer."),
]


def with_generation_options(command):
    for option in reversed(generation_options):
        command = option(command)
    return command


def model_or_twin(model: str | None, twin: str | None) -> str | None:
    if model and twin:
        raise LanternError("give --model or --twin, not both (a twin runs on its own base model)")
    return twin or model


def pick_conversation(
    assistant: Assistant, continue_: bool, conversation_id: str | None
) -> Conversation | None:
    if conversation_id:
        return assistant.conversations.get(conversation_id)
    if continue_:
        latest = assistant.conversations.latest()
        if latest is None:
            raise LanternError("there is no conversation to continue yet; drop --continue")
        return latest
    return None


def refuse_local_only_options(
    assistant: Assistant, model: str | None, conversation: Conversation | None, speculative: str | None
) -> None:
    """``--speculative prompt-lookup`` checks drafts in llama.cpp's own KV cells: a remote model
    cannot, so asking for it explicitly is an error (the config's default is just not applied)."""
    if speculative != "prompt-lookup":
        return
    name = assistant.model_key(model or (conversation.model if conversation else None))
    remote = assistant.models.remote(name)
    if remote is not None:
        raise LanternError(
            f"--speculative prompt-lookup runs in the local engine; model {name!r} is remote ({remote.url})"
        )
