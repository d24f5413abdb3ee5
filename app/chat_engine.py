"""The seam between Lantern and whatever answers its chats: the local llama.cpp engine
(app/engine.py) or an OpenAI-compatible server (app/remote_engine.py). Callers that hold a
``ChatEngine`` do not know which one they have."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Protocol

from app.chat_template import ChatMessage
from app.context_budget import PromptPlan
from app.decoding import GenerationSettings

DEFAULT_SETTINGS = GenerationSettings()


@dataclass(frozen=True)
class ChatResult:
    text: str
    # "stop": the model or a stop sequence ended it; "length": out of tokens; "cancelled": the
    # reader stopped it; "cut": a remote engine's stream broke off half way (the text is partial)
    finish_reason: str
    prompt_tokens: int
    prompt_tokens_evaluated: int  # prompt tokens not served from the KV cache
    completion_tokens: int
    dropped_messages: int  # old messages trimmed to fit the context window
    time_to_first_token_s: float
    total_s: float
    draft_tokens: int = 0  # tokens guessed by prompt lookup and checked by the model
    accepted_draft_tokens: int = 0  # of those, the ones the model agreed with

    @property
    def decode_tokens_per_s(self) -> float:
        decode_s = self.total_s - self.time_to_first_token_s
        if self.completion_tokens < 2 or decode_s <= 0:
            return 0.0
        return (self.completion_tokens - 1) / decode_s


class ChatStream:
    """An answer being generated: iterate for text pieces; ``result`` is set once it ends."""

    def __init__(self, plan: PromptPlan):
        self.plan = plan
        self.result: ChatResult | None = None
        self._pieces: Generator[str, None, None] | None = None
        self._cancelled = threading.Event()
        # A remote stream shuts its socket down here, so a read blocked on the network ends now.
        self._on_cancel: Callable[[], None] | None = None

    def __iter__(self) -> Iterator[str]:
        assert self._pieces is not None
        return self._pieces

    def cancel(self) -> None:
        """Ask the generation to stop after the current token; safe from any thread."""
        self._cancelled.set()
        if self._on_cancel is not None:
            self._on_cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def close(self) -> None:
        """Stop generating (a reader went away); the engine stays usable."""
        if self._pieces is not None:
            self._pieces.close()
        if self._on_cancel is not None:  # a remote answer never iterated still holds its connection
            self._on_cancel()


class ChatEngine(Protocol):
    """A model that answers chats, local (llama.cpp) or remote (OpenAI-compatible HTTP)."""

    context_length: int  # tokens the engine holds at once

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (exact locally, a safe over-estimate remotely)."""
        ...

    def plan(self, messages: list[ChatMessage], max_tokens: int) -> PromptPlan:
        """Drop old turns until the prompt and the answer budget fit; ContextOverflowError if they cannot."""
        ...

    def stream_chat(
        self, messages: list[ChatMessage], settings: GenerationSettings = DEFAULT_SETTINGS
    ) -> ChatStream:
        """Start answering; bad input and overflow raise here, before any text is streamed."""
        ...

    def chat(
        self, messages: list[ChatMessage], settings: GenerationSettings = DEFAULT_SETTINGS
    ) -> ChatResult:
        """The whole answer (stream_chat, drained)."""
        ...

    def close(self) -> None:
        """Free what the engine holds: the model, or the HTTP connection pool."""
        ...


def drain(stream: ChatStream) -> ChatResult:
    """Read a stream to its end: the whole answer, as ``chat`` gives it."""
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result
