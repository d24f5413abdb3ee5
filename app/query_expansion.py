"""Query expansion by the local chat model (HyDE): a short passage written as if it answered the
question, searched for beside the question itself. Off by default; see bench/RESULTS.md."""

from __future__ import annotations

from app.chat_engine import ChatEngine
from app.chat_template import ChatMessage
from app.decoding import GenerationSettings

INSTRUCTION = (
    "Write two or three sentences, as a reference manual would, that answer the question. "
    "State facts only; do not say that you are unsure."
)
SETTINGS = GenerationSettings(max_tokens=96, temperature=0.0)


def hypothetical_passage(engine: ChatEngine, question: str) -> str:
    """What the model believes an answer looks like; its vocabulary, not its facts, is the point."""
    messages = [ChatMessage("system", INSTRUCTION), ChatMessage("user", question)]
    return engine.chat(messages, SETTINGS).text.strip()
