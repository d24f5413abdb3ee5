"""Fit a conversation into the context window by dropping its oldest turns.

The system prompt and the newest user message always stay; if those alone do not fit,
the user gets an error that names the limit instead of a silently truncated prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.chat_template import ChatMessage
from app.errors import ContextOverflowError


@dataclass(frozen=True)
class PromptPlan:
    messages: list[ChatMessage]  # the messages actually sent, oldest turns trimmed
    tokens: list[int]
    dropped_messages: int
    max_new_tokens: int  # the answer's budget: what was asked, capped by the room left


def _split(messages: list[ChatMessage]) -> tuple[list[ChatMessage], list[ChatMessage], ChatMessage]:
    if not messages or messages[-1].role != "user":
        raise ValueError("a conversation to answer must end with a user message")
    system_count = 0
    while system_count < len(messages) - 1 and messages[system_count].role == "system":
        system_count += 1
    return messages[:system_count], messages[system_count:-1], messages[-1]


def _drop_oldest_turn(history: list[ChatMessage]) -> list[ChatMessage]:
    """Drop the oldest message and any assistant replies to it, so history starts with a user."""
    rest = history[1:]
    while rest and rest[0].role != "user":
        rest = rest[1:]
    return rest


def fit_to_context(
    messages: list[ChatMessage],
    tokenize_prompt: Callable[[list[ChatMessage]], list[int]],
    context_length: int,
    max_tokens: int,
) -> PromptPlan:
    """Trim old turns until prompt + answer budget fits ``context_length`` tokens."""
    system, history, newest = _split(messages)
    tokens = tokenize_prompt([*system, *history, newest])
    while history and len(tokens) + max_tokens > context_length:
        history = _drop_oldest_turn(history)
        tokens = tokenize_prompt([*system, *history, newest])
    if len(tokens) >= context_length:
        raise ContextOverflowError(
            f"the prompt is {len(tokens)} tokens but the context window is {context_length} "
            "tokens; shorten the message or raise runtime.context_length in the config"
        )
    kept = [*system, *history, newest]
    return PromptPlan(
        messages=kept,
        tokens=tokens,
        dropped_messages=len(messages) - len(kept),
        max_new_tokens=min(max_tokens, context_length - len(tokens)),
    )
