"""The runtime streams real answers from the bundled model and reuses the KV cache across turns.

The chat tests run twice (``any_engine``): on the local llama.cpp engine, and on a RemoteEngine
talking to the real llama_cpp.server with the same model; the KV-cache tests are local only."""

from __future__ import annotations

import llama_cpp

from app.chat_template import ChatMessage
from app.engine import Engine, GenerationSettings
from app.remote_engine import RemoteEngine

GREEDY = GenerationSettings(max_tokens=24, temperature=0.0)
FRANCE = [ChatMessage("user", "What is the capital of France? Answer in one word.")]


def test_streamed_pieces_add_up_to_the_answer(any_engine):
    stream = any_engine.stream_chat(FRANCE, GREEDY)
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == stream.result.text
    assert "Paris" in stream.result.text
    assert stream.result.finish_reason == "stop"


def test_max_tokens_caps_the_answer(any_engine):
    result = any_engine.chat(
        [ChatMessage("user", "Count from one to one hundred in words.")],
        GenerationSettings(max_tokens=5, temperature=0.0),
    )
    if isinstance(any_engine, RemoteEngine):  # counted in streamed pieces, which may hold several tokens
        assert 1 <= result.completion_tokens <= 5
    else:
        assert result.completion_tokens == 5
    assert result.finish_reason == "length"


def test_the_same_seed_gives_the_same_sampled_answer(any_engine):
    prompt = [ChatMessage("user", "Invent a name for a cat.")]
    settings = GenerationSettings(max_tokens=20, temperature=1.0, top_p=0.95, seed=1234)
    first = any_engine.chat(prompt, settings).text
    if isinstance(any_engine, Engine):
        any_engine.forget_cache()
    again = any_engine.chat(prompt, settings).text
    assert first == again
    others = {
        any_engine.chat(prompt, GenerationSettings(max_tokens=20, temperature=1.0, seed=s)).text
        for s in range(5)
    }
    assert len(others) > 1  # temperature really samples


def test_a_stop_sequence_ends_the_answer_before_it(any_engine):
    baseline = any_engine.chat(FRANCE, GREEDY).text
    assert "Paris" in baseline
    result = any_engine.chat(FRANCE, GenerationSettings(max_tokens=24, temperature=0.0, stop=("Paris",)))
    assert result.text == baseline[: baseline.index("Paris")]
    assert result.finish_reason == "stop"


def _perf(engine):
    return llama_cpp.llama_perf_context(engine.llm._ctx.ctx)


def test_second_turn_evaluates_only_the_new_tokens(engine):
    history = [
        ChatMessage("system", "You are Lantern."),
        ChatMessage("user", "Remember: the door code is 4711. " * 20),
    ]
    engine.forget_cache()
    first = engine.chat(history, GREEDY)
    assert first.prompt_tokens_evaluated == first.prompt_tokens

    second_turn = [
        *history,
        ChatMessage("assistant", first.text),
        ChatMessage("user", "What is the door code?"),
    ]
    llama_cpp.llama_perf_context_reset(engine.llm._ctx.ctx)
    second = engine.chat(second_turn, GREEDY)
    evaluated_by_llama = _perf(engine).n_p_eval
    assert second.prompt_tokens > first.prompt_tokens
    assert second.prompt_tokens_evaluated < second.prompt_tokens - first.prompt_tokens + 5
    # llama.cpp's own counters agree: far fewer prompt tokens went through the model.
    assert evaluated_by_llama <= second.prompt_tokens_evaluated
    assert evaluated_by_llama < first.prompt_tokens

    engine.forget_cache()
    cold = engine.chat(second_turn, GREEDY)
    assert cold.prompt_tokens_evaluated == cold.prompt_tokens
    assert cold.text == second.text  # reuse changes the cost, never the answer


def test_a_reader_that_goes_away_mid_answer_leaves_the_engine_usable(any_engine):
    stream = any_engine.stream_chat(
        [ChatMessage("user", "Write a long story about a fox.")],
        GenerationSettings(max_tokens=200, temperature=0.0),
    )
    iterator = iter(stream)
    next(iterator)
    next(iterator)
    stream.close()
    assert stream.result is not None
    assert stream.result.completion_tokens < 200
    assert stream.result.finish_reason == "cancelled"
    assert "Paris" in any_engine.chat(FRANCE, GREEDY).text
