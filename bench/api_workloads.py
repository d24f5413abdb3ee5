"""What bench_api.py sends and how it reads the answers: one streamed chat through the official
``openai`` client, a conversation that resends its history each turn, and the texts — Python's
pydoc topics (they ship with Python) as notes and long prompts, the labelled questions of
``bench/data/memory_questions.jsonl`` for answers from memory, and free-chat prompts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from pydoc_data.topics import topics as PYDOC_TOPICS

import httpx
import openai

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
STORY = [SYSTEM, {"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]
FIRST_QUESTION = "Here is a note of mine:\n\n{note}\n\nWhat is this note about? Answer briefly."
FOLLOW_UPS = (
    "Summarise it in one sentence.",
    "Which term in it matters most, and why?",
    "Give me a short example.",
    "What is a common mistake here?",
    "Explain it to a beginner.",
    "Which part is the hardest to understand?",
    "What should I remember from it?",
)
# Split once, before any measurement: the tuning prompts choose the default, the reporting
# prompts give the figures.
FREE_CHAT_TUNING = (
    "Write a short story about a fox who learns to read.",
    "Explain how a refrigerator keeps food cold.",
    "Describe a walk through a busy market in the morning.",
    "Why do leaves change colour in autumn?",
    "Write a letter to a friend about a trip to the mountains.",
    "Explain what a computer's memory is for.",
)
FREE_CHAT_REPORTING = (
    "Write a short story about a robot who wants to be a gardener.",
    "Explain how a bicycle stays upright.",
    "Describe a rainy afternoon in a small village.",
    "Why is the sky blue?",
    "Write a letter to your neighbour about a lost cat.",
    "Explain what a recipe is and how to follow one.",
)
MEMORY_QUESTIONS = Path(__file__).parent / "data" / "memory_questions.jsonl"
# Topics long enough to start a note; a note that needs more continues into the next topic.
LONG_TOPICS = sorted(t for t, text in PYDOC_TOPICS.items() if len(text) >= 3000)


@dataclass(eq=False)
class Endpoint:
    """A running server: its name in the tables, base URL and bearer token (None: no auth)."""

    name: str
    url: str
    key: str | None = None

    @cached_property
    def client(self) -> openai.OpenAI:
        # No retries: a failed request must count as failed. One client per server, shared by
        # threads, so requests reuse their connections.
        return openai.OpenAI(
            base_url=self.url + "/v1", api_key=self.key or "none", max_retries=0, timeout=300
        )


@dataclass
class Reply:
    """One streamed answer: when each chunk with text arrived, the text, the final usage."""

    started: float
    times: list[float] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    usage: object | None = None  # the last chunk's usage (Lantern sends it; llama_cpp.server not)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def ttft(self) -> float:
        return self.times[0] - self.started

    @property
    def first_token_at(self) -> float:
        return self.times[0]

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens if self.usage else len(self.times)

    @property
    def decode_s(self) -> float:
        return self.times[-1] - self.times[0]

    @property
    def rate(self) -> float:
        """Decode tokens/s after the first token."""
        return (self.completion_tokens - 1) / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def prompt_tokens(self) -> int | None:
        return self.usage.prompt_tokens if self.usage else None

    @property
    def cached_tokens(self) -> int | None:
        details = self.usage and self.usage.prompt_tokens_details
        return details.cached_tokens if details else None

    @property
    def drafts(self) -> tuple[int, int]:
        """(accepted, rejected) speculative draft tokens; (0, 0) when not reported."""
        details = self.usage and self.usage.completion_tokens_details
        if not details:
            return 0, 0
        return details.accepted_prediction_tokens or 0, details.rejected_prediction_tokens or 0


def stream_chat(
    endpoint: Endpoint,
    messages: list[dict],
    max_tokens: int,
    *,
    memory: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> Reply:
    """One greedy streamed chat completion. ``memory``: Lantern answers from the notes.
    ``on_chunk(n)`` is called after the n-th chunk with text arrives."""
    reply = Reply(started=time.perf_counter())
    try:
        stream = endpoint.client.chat.completions.create(
            model="served",
            messages=messages,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            extra_body={"lantern": {"memory": True}} if memory else None,
        )
        for chunk in stream:
            if chunk.usage:
                reply.usage = chunk.usage
            content = chunk.choices[0].delta.content if chunk.choices else None
            if content:
                reply.times.append(time.perf_counter())
                reply.pieces.append(content)
                if on_chunk:
                    on_chunk(len(reply.times))
    except (openai.OpenAIError, httpx.HTTPError) as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
    if reply.error is None and not reply.times:
        reply.error = "no tokens"
    return reply


def converse(endpoint: Endpoint, note: str, turns: int, max_tokens: int) -> list[Reply]:
    """A phone's chat: the note and a question, then short follow-ups, each turn resending the
    whole history with the answers as they came back."""
    messages = [SYSTEM]
    replies = []
    for turn in range(turns):
        question = FIRST_QUESTION.format(note=note) if turn == 0 else FOLLOW_UPS[(turn - 1) % len(FOLLOW_UPS)]
        messages.append({"role": "user", "content": question})
        reply = stream_chat(endpoint, messages, max_tokens)
        replies.append(reply)
        messages.append({"role": "assistant", "content": reply.text})
    return replies


def pydoc_prose(count_tokens: Callable[[str], int], index: int, tokens: int) -> str:
    """About ``tokens`` tokens of whole lines, from the start of the ``index``-th long pydoc topic
    on (so texts of different indices differ from their first word)."""
    lines, total = [], 0
    for k in range(len(LONG_TOPICS)):
        topic = LONG_TOPICS[(index + k) % len(LONG_TOPICS)]
        for line in PYDOC_TOPICS[topic].splitlines():
            size = count_tokens(line + "\n")
            if total + size > tokens:
                return "\n".join(lines).strip()
            lines.append(line)
            total += size
        lines.append("")
    return "\n".join(lines).strip()


def memory_questions(split: str, count: int) -> list[dict]:
    """The first ``count`` labelled questions of ``split`` (dev or test) about pydoc topics."""
    with MEMORY_QUESTIONS.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["split"] == split and r["source"].startswith("pydoc/")][:count]


def write_pydoc_notes(folder: Path, questions: list[dict]) -> int:
    """The pydoc topics the questions are about, as notes (named and headed as memory_corpus.py
    writes them); returns how many files."""
    folder.mkdir(parents=True, exist_ok=True)
    topics = sorted({q["source"].removeprefix("pydoc/").removesuffix(".txt") for q in questions})
    for topic in topics:
        (folder / f"{topic}.txt").write_text(f"{topic}\n\n{PYDOC_TOPICS[topic]}", encoding="utf-8")
    return len(topics)
