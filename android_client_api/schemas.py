"""Request and response bodies: the OpenAI shapes Lantern serves, plus its own extensions.

Parameters Lantern does not implement are handled as OpenAI documents them being optional:
``frequency_penalty``, ``presence_penalty``, ``logit_bias``, ``user``, ``response_format`` (text)
and ``stream_options`` are accepted and ignored; ``n`` other than 1, ``tools`` and
``logprobs`` are rejected with 422 so a client never silently gets less than it asked for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _refuse(feature: str, value):
    """Features Lantern does not implement are refused, so no client silently gets less."""
    if value:
        raise ValueError(f"{feature} are not supported")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = [p.get("text", "") for p in self.content if p.get("type") == "text"]
        if len(parts) != len(self.content):
            raise ValueError("only text content parts are supported")
        return "".join(parts)


class LanternOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    memory: bool = False  # retrieve from the user's notes and return citations
    conversation_id: str | None = None  # continue (and save into) a stored conversation
    save: bool = False  # store a new conversation even without memory (the web client does)
    regenerate: bool = False  # the sent user message and its answer replace the last exchange


class _Sampling(_Request):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    # Unset: Lantern's configured defaults (gentler than OpenAI's 1.0, which small models need).
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = 1
    logprobs: bool | int | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    _no_logprobs = field_validator("logprobs")(lambda value: _refuse("logprobs", value))

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop[:4])


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=256)  # trimming is per turn
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    tools: list[Any] | None = None
    lantern: LanternOptions = Field(default_factory=LanternOptions)

    _no_tools = field_validator("tools")(lambda value: _refuse("tools", value))


class CompletionRequest(_Sampling):
    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ValueError("send one prompt per request")
            return self.prompt[0]
        return self.prompt


class EmbeddingRequest(_Request):
    input: str | list[str] = Field(min_length=1)
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"  # base64: little-endian float32, as OpenAI


class MemorySearchRequest(_Request):
    query: str = Field(min_length=1, max_length=2000)
    k: int = Field(default=5, ge=1, le=50)


class NoteRequest(_Request):
    title: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=200_000)


class RenameRequest(_Request):
    title: str = Field(min_length=1, max_length=200)


class FeedbackRequest(_Request):
    """A thumbs up (+1) or down (-1) on an answer; with ``edited``, the user's better answer."""

    conversation_id: str = Field(min_length=1, max_length=64)
    message_id: int
    rating: Literal[-1, 1]
    edited: str | None = Field(default=None, min_length=1, max_length=200_000)


class Citation(BaseModel):
    source: str
    heading: str
    text: str
    score: float


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
