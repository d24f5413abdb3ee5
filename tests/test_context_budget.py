"""Long conversations are trimmed to fit the context window; impossible prompts name the limit."""

from __future__ import annotations

import pytest

from app.assistant import Assistant
from app.chat_template import ChatMessage
from app.context_budget import fit_to_context
from app.errors import ContextOverflowError
from tests.conftest import run_lantern


def _long_chat(turns: int) -> list[ChatMessage]:
    messages = [ChatMessage("system", "You are Lantern.")]
    for i in range(turns):
        messages.append(ChatMessage("user", f"Question {i}: " + "tell me more " * 40))
        messages.append(ChatMessage("assistant", f"Answer {i}: " + "here is more " * 40))
    messages.append(ChatMessage("user", "The newest question."))
    return messages


def test_a_conversation_that_fits_is_sent_whole(engine):
    messages = _long_chat(2)
    plan = fit_to_context(messages, engine.tokenize_chat, 4096, 256)
    assert plan.messages == messages
    assert plan.dropped_messages == 0
    assert plan.max_new_tokens == 256


def test_old_turns_are_dropped_but_system_and_newest_question_stay(engine):
    messages = _long_chat(30)  # about 3000 tokens of history
    plan = fit_to_context(messages, engine.tokenize_chat, 1024, 200)
    assert len(plan.tokens) + 200 <= 1024
    assert plan.messages[0] == messages[0]
    assert plan.messages[-1] == messages[-1]
    assert plan.dropped_messages > 0
    kept = plan.messages[1:]
    assert kept[0].role == "user"  # trimmed by whole turns
    assert kept == messages[len(messages) - len(kept) :]  # the newest turns survive, in order


def test_the_answer_budget_shrinks_to_the_room_left(engine):
    messages = [ChatMessage("user", "word " * 900)]
    plan = fit_to_context(messages, engine.tokenize_chat, 1024, 512)
    assert plan.max_new_tokens == 1024 - len(plan.tokens)
    assert 0 < plan.max_new_tokens < 512


def test_a_prompt_longer_than_the_whole_context_names_the_limit(engine):
    messages = _long_chat(3)[:1] + [ChatMessage("user", "word " * 1200)]
    with pytest.raises(ContextOverflowError, match="context window is 1024 tokens"):
        fit_to_context(messages, engine.tokenize_chat, 1024, 64)


def test_the_engine_answers_a_trimmed_conversation(tmp_path):
    # A 512-token window: the trimmed prompt the model reads is then seconds long, not 4096 tokens.
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[runtime]\ncontext_length = 512\n")
    assistant = Assistant(home)
    try:
        engine = assistant.engine()
        assert engine.context_length == 512
        messages = _long_chat(8)  # about 1000 tokens: far more than the window
        result = engine.chat(messages, assistant.settings(max_tokens=8, temperature=0))
    finally:
        assistant.close()
    assert result.dropped_messages > 0
    assert result.prompt_tokens + 8 <= 512
    assert result.completion_tokens > 0


def test_cli_refuses_an_oversized_prompt_naming_the_limit(home):
    result = run_lantern("ask", "word " * 6000)
    assert result.returncode != 0
    err = result.stderr.decode()
    assert "context window is 4096 tokens" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_trims_old_turns_of_a_continued_conversation_and_says_so(home):
    run_lantern("models", "list")
    (home / "config.toml").write_text(
        "[runtime]\ncontext_length = 256\n[generation]\nmax_tokens = 16\ntemperature = 0.0\n"
    )
    first = run_lantern("ask", "Remember this list: " + "apple pear plum " * 40)
    assert first.returncode == 0, first.stderr
    assert b"left out" not in first.stderr
    second = run_lantern("ask", "-c", "Count these: " + "fig " * 100 + "How many?")
    assert second.returncode == 0, second.stderr
    assert b"the 2 oldest messages were left out to fit the context window" in second.stderr
    conversation_id = run_lantern("conversations", "list").stdout.split()[0].decode()
    shown = run_lantern("conversations", "show", conversation_id).stdout.decode()
    assert shown.count("[user]") == 2  # trimming shapes the prompt; the saved chat keeps everything
