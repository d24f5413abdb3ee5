"""Phone chats that stay fast: every turn resends the whole conversation, and Lantern evaluates
only what is new — from the cells a conversation left in its slot, or from its saved state — and
answers exactly as if it had evaluated everything afresh."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import httpx
import openai
import pytest

from app.batching import BatchScheduler
from app.chat_template import ChatMessage
from app.engine import ChatResult, GenerationSettings
from app.kv_states import StateCache
from tests.api_server import start_server
from tests.conftest import run_lantern
from tests.memory_fixtures import FACTS, make_notes

# The repetition guard off: these tests compare ways of evaluating a prompt, and past 256 KV cells
# a reused prefix differs from a cold run in the last bits of its logits (README, "One limit to
# know"). The repeat penalty makes near-ties for those bits to flip: with it, the third turn here
# ends at "three languages." warm and goes on cold.
GREEDY = GenerationSettings(max_tokens=24, temperature=0.0, repetition_guard="off")
PLAIN = GenerationSettings(max_tokens=48, temperature=0.0, repetition_guard="off")
SPECULATIVE = replace(PLAIN, speculative="prompt-lookup")
NOTE = (
    "Harbour committee, March. The lighthouse roof leaks above the lamp room again; the glazier "
    "comes on the twelfth. Old paint on the gallery rail contains lead and must be removed by a "
    "certified team before anyone sands it. The ferry company offered to print new signs in three "
    "languages. The tower opens to the public on the first Sunday of each month from May. "
) * 3
QUESTIONS = ["What does the glazier do?", "When does the tower open?", "Who prints the signs?"]


def answer(scheduler: BatchScheduler, messages: list[ChatMessage], settings=GREEDY) -> ChatResult:
    async def run() -> ChatResult:
        stream = scheduler.submit(scheduler.plan_chat(messages, settings.max_tokens), settings)
        async for _ in stream:
            pass
        return stream.result

    return asyncio.run(run())


def conversation(note: str, questions: list[str], answers: list[str]) -> list[ChatMessage]:
    """A phone's request: the whole history, then the newest question."""
    messages = [ChatMessage("system", "You answer from the user's notes.")]
    for k, question in enumerate(questions):
        messages.append(ChatMessage("user", f"{note}\n\n{question}" if k == 0 else question))
        if k < len(answers):
            messages.append(ChatMessage("assistant", answers[k]))
    return messages


@pytest.fixture
def cold(engine):
    """The same model evaluating every prompt whole: what every answer must equal."""
    scheduler = BatchScheduler(engine, slots=1, reuse_prefix=False)
    yield scheduler
    scheduler.close()


def test_each_turn_evaluates_only_what_is_new_and_answers_as_a_cold_run(engine, cold):
    warm = BatchScheduler(engine, slots=2)
    try:
        answers: list[str] = []
        previous_prompt = 0
        for turn in range(1, len(QUESTIONS) + 1):
            messages = conversation(NOTE, QUESTIONS[:turn], answers)
            result = answer(warm, messages)
            reference = answer(cold, messages)
            assert reference.prompt_tokens_evaluated == reference.prompt_tokens
            assert result.text == reference.text
            if turn == 1:
                assert result.prompt_tokens_evaluated == result.prompt_tokens
            else:  # the note and every earlier turn came from the cells
                assert result.prompt_tokens - result.prompt_tokens_evaluated >= previous_prompt
            previous_prompt = result.prompt_tokens
            answers.append(result.text)
    finally:
        warm.close()


def test_a_conversation_edited_in_the_middle_is_evaluated_from_the_change(engine, cold):
    warm = BatchScheduler(engine, slots=1)
    try:
        original = conversation(NOTE, QUESTIONS, ["The roof.", "In May."])
        answer(warm, original)
        edited = list(original)
        edited[3] = ChatMessage("assistant", "From May, on the first Sunday.")  # an earlier answer changed
        result = answer(warm, edited)
        assert result.prompt_tokens - result.prompt_tokens_evaluated == shared_prefix(
            engine, original, edited
        )
        assert result.text == answer(cold, edited).text
    finally:
        warm.close()


def test_a_conversation_pushed_out_of_its_slot_resumes_from_its_saved_state(engine, cold, tmp_path):
    cache = StateCache(max_bytes=64 * 2**20)
    one_slot = BatchScheduler(engine, slots=1, state_cache=cache)
    try:
        phone = conversation(NOTE, QUESTIONS[:1], [])
        first = answer(one_slot, phone)
        answer(one_slot, conversation("A different note about the garden. " * 20, QUESTIONS[:1], []))
        assert len(cache) == 1  # the phone's conversation was saved before its slot was taken

        follow_up = conversation(NOTE, QUESTIONS[:2], [first.text])
        resumed = answer(one_slot, follow_up)
        assert cache.hits == 1
        assert resumed.prompt_tokens - resumed.prompt_tokens_evaluated >= first.prompt_tokens
        assert resumed.text == answer(cold, follow_up).text
    finally:
        one_slot.close()


def test_two_devices_with_different_histories_never_share_a_state(engine, cold):
    cache = StateCache(max_bytes=64 * 2**20)
    one_slot = BatchScheduler(engine, slots=1, state_cache=cache)
    try:
        laptop = conversation(NOTE, QUESTIONS[:2], ["The glazier fixes the roof."])
        phone = conversation(NOTE, QUESTIONS[:2], ["He repairs the lamp room."])  # same note, other answer
        answer(one_slot, laptop)
        answer(one_slot, conversation("Unrelated. " * 60, QUESTIONS[:1], []))  # the laptop's state is saved
        result = answer(one_slot, phone)
        # Only what the two histories truly share (the note and first question) came from the laptop's state.
        assert result.prompt_tokens - result.prompt_tokens_evaluated <= shared_prefix(engine, laptop, phone)
        assert result.text == answer(cold, phone).text
    finally:
        one_slot.close()


def test_the_state_cache_keeps_within_its_size_dropping_the_least_recently_used(engine):
    notes = [f"Note {k}: " + NOTE for k in range(3)]
    roomy = StateCache(max_bytes=2**30)
    probe = BatchScheduler(engine, slots=1, state_cache=roomy)
    try:  # how big one conversation's state is: push one out of the slot and look
        answer(probe, conversation(notes[0], QUESTIONS[:1], []))
        answer(probe, conversation(notes[1], QUESTIONS[:1], []))
        one_state = roomy.memory_bytes
    finally:
        probe.close()

    cache = StateCache(max_bytes=int(2.5 * one_state))  # room for two states, not three
    one_slot = BatchScheduler(engine, slots=1, state_cache=cache)
    try:
        for note in [*notes, "Last note. " * 40]:  # each pushes the previous one out of the slot
            answer(one_slot, conversation(note, QUESTIONS[:1], []))
        assert len(cache) == 2 and cache.memory_bytes <= cache.max_bytes  # notes 1 and 2
        newest = answer(one_slot, conversation(notes[2], QUESTIONS[:1], []))
        assert newest.prompt_tokens_evaluated == 1  # still cached: resumed, one token run for logits
        oldest_chat = conversation(notes[0], QUESTIONS[:1], [])
        oldest = answer(one_slot, oldest_chat)
        assert oldest.prompt_tokens_evaluated == oldest.prompt_tokens  # dropped: evaluated again
    finally:
        one_slot.close()


def shared_prefix(engine, first: list[ChatMessage], second: list[ChatMessage]) -> int:
    """How many prompt tokens two conversations start with in common."""
    a, b = engine.tokenize_chat(first), engine.tokenize_chat(second)
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_speculative_answers_are_the_plain_answers_and_drafts_are_accepted(engine, cold):
    quote = conversation(NOTE, ["Copy the first two sentences of the note exactly."], [])
    story = [ChatMessage("user", "Tell a short story about a fox and a lighthouse.")]
    speculating = BatchScheduler(engine, slots=2)
    try:
        for messages in (quote, story):
            plain = answer(cold, messages, PLAIN)
            drafted = answer(speculating, messages, SPECULATIVE)
            assert drafted.text == plain.text
            assert drafted.draft_tokens >= drafted.accepted_draft_tokens
        assert drafted is not None
        copied = answer(speculating, quote, SPECULATIVE)
        assert copied.accepted_draft_tokens > 10  # quoting the note: the guesses hold
    finally:
        speculating.close()
    # The single-stream engine (ask, chat, the TUI) speculates the same way.
    engine.forget_cache()
    plain = engine.chat(quote, PLAIN)
    engine.forget_cache()
    drafted = engine.chat(quote, SPECULATIVE)
    assert drafted.text == plain.text and drafted.accepted_draft_tokens > 10


def test_a_long_prompt_is_evaluated_in_steps_between_a_streaming_answers_tokens(engine):
    scheduler = BatchScheduler(engine, slots=2, token_gap_ms=1)  # the tightest bound: smallest chunks
    streaming_tokens: list[float] = []
    long_prompt_started = long_prompt_answered = None

    async def run() -> None:
        nonlocal long_prompt_started, long_prompt_answered
        story = [ChatMessage("user", "Write a very long story about the sea.")]
        settings = GenerationSettings(max_tokens=400, temperature=0.0)
        stream = scheduler.submit(scheduler.plan_chat(story, 400), settings)

        async def read_story() -> None:
            async for _ in stream:
                streaming_tokens.append(time.perf_counter())

        reader = asyncio.create_task(read_story())
        while len(streaming_tokens) < 5:
            await asyncio.sleep(0.01)
        long_prompt = conversation(NOTE * 2, QUESTIONS[:1], [])
        plan = scheduler.plan_chat(long_prompt, 4)
        assert len(plan.tokens) > 400
        long_prompt_started = time.perf_counter()
        other = scheduler.submit(plan, GenerationSettings(max_tokens=4, temperature=0.0))
        async for _ in other:
            if long_prompt_answered is None:
                long_prompt_answered = time.perf_counter()
        long_prompt_answered = long_prompt_answered or time.perf_counter()
        stream.cancel()
        await reader

    try:
        asyncio.run(run())
    finally:
        scheduler.close()
    during = [t for t in streaming_tokens if long_prompt_started < t < long_prompt_answered]
    # The story kept streaming while the long prompt went through in small chunks: at least one of
    # its tokens per 16 prompt tokens (the tightest bound gives the smallest chunks).
    assert len(during) >= 400 // 16


@pytest.fixture(scope="module")
def phone_server(tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("reuse-home")
    previous = os.environ.get("LANTERN_HOME")
    os.environ["LANTERN_HOME"] = str(home)
    running = start_server(slots=2, speculative="prompt-lookup")
    running.service.assistant.memory.add([make_notes(tmp_path_factory.mktemp("notes"))])
    cold = start_server(slots=1, reuse_prefix=False)
    # One data home: each server pairs its own phone (pairing a name again replaces its token).
    running.token, cold.token = running.service.devices.pair("warm"), cold.service.devices.pair("cold")
    yield running, cold
    running.stop()
    cold.stop()
    if previous is None:
        os.environ.pop("LANTERN_HOME", None)
    else:
        os.environ["LANTERN_HOME"] = previous


def test_a_phone_chat_over_the_api_reports_cached_tokens_and_answers_as_cold(phone_server):
    warm, cold = phone_server
    clients = [openai.OpenAI(base_url=s.url + "/v1", api_key=s.token, max_retries=0) for s in (warm, cold)]
    # One copy of the note: the chat stays within llama.cpp's first 256 KV cells, where speculating
    # and reused answers are token for token the plain ones (README: past them, near-ties may flip).
    history = [{"role": "user", "content": f"{NOTE[: len(NOTE) // 3]}\n\nWhat does the glazier do?"}]
    previous_prompt_tokens = 0
    follow_ups = ["And the lighthouse in Brittany: what is it built from?", "When does the tower open?"]
    for turn, follow_up in enumerate([None, *follow_ups]):
        if follow_up:
            history.append({"role": "user", "content": follow_up})
        memory = {"lantern": {"memory": True}} if follow_up == follow_ups[0] else {}
        replies = [
            c.chat.completions.create(
                model="smollm2-135m-instruct",
                messages=history,
                max_tokens=24,
                temperature=0,
                extra_body=memory,
            )
            for c in clients
        ]
        warm_reply, cold_reply = replies
        assert warm_reply.choices[0].message.content == cold_reply.choices[0].message.content
        cached = warm_reply.usage.prompt_tokens_details.cached_tokens
        assert cold_reply.usage.prompt_tokens_details.cached_tokens == 0
        if turn == 0:
            assert cached < 10
        else:  # the note and the earlier turns (as resent) were not evaluated again
            assert cached >= previous_prompt_tokens - 8
        if memory:
            assert FACTS["trip.md"].split()[-1].rstrip(".") in str(warm_reply.model_extra)
        if not memory:  # a memory turn's passages are not resent with the history next turn
            previous_prompt_tokens = warm_reply.usage.prompt_tokens
        history.append({"role": "assistant", "content": warm_reply.choices[0].message.content})


def test_a_client_gone_mid_speculation_frees_its_slot(phone_server):
    warm, _ = phone_server
    body = {
        "messages": [{"role": "user", "content": f"{NOTE}\n\nRepeat the note three times."}],
        "max_tokens": 1000,
        "temperature": 0,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {warm.token}"}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", warm.url + "/v1/chat/completions", headers=headers, json=body) as response:
            for line in response.iter_lines():
                if '"content": "' in line and '"content": ""' not in line:
                    break
            assert http.get(warm.url + "/v1/lantern/health").json()["busy_slots"] == 1
        gone_at = time.monotonic()
        while (
            http.get(warm.url + "/v1/lantern/health").json()["busy_slots"] and time.monotonic() - gone_at < 5
        ):
            time.sleep(0.02)
        assert http.get(warm.url + "/v1/lantern/health").json()["busy_slots"] == 0
    # ...and the slot answers the next phone.
    client = openai.OpenAI(base_url=warm.url + "/v1", api_key=warm.token, max_retries=0)
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
    )
    assert reply.choices[0].message.content


def test_ask_continue_in_a_new_process_resumes_the_saved_conversation(home, tmp_path, monkeypatch):
    def two_turns() -> tuple[dict, dict]:
        first = _ask_json(f"{NOTE}\n\n{QUESTIONS[0]}")
        return first, _ask_json("-c", QUESTIONS[1])

    first, warm = two_turns()
    assert any((home / "kv-states").rglob("*.kv"))  # the first process saved its conversation as it ended
    usage = warm["usage"]
    assert usage["prompt_tokens"] - usage["prompt_tokens_evaluated"] >= first["usage"]["prompt_tokens"]

    cold_home = tmp_path / "cold-home"
    cold_home.mkdir()
    (cold_home / "config.toml").write_text("[runtime]\nstate_disk_mb = 0\n", encoding="utf-8")
    monkeypatch.setenv("LANTERN_HOME", str(cold_home))
    _, cold = two_turns()
    assert cold["usage"]["prompt_tokens_evaluated"] == cold["usage"]["prompt_tokens"]
    assert warm["text"] == cold["text"]


def _ask_json(*args: str) -> dict:
    done = run_lantern("ask", "--json", "--max-tokens", "16", "-t", "0", "--no-memory", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_encrypted_memory_keeps_conversation_states_off_the_disk(home, monkeypatch):
    monkeypatch.setenv("LANTERN_PASSPHRASE", "correct horse battery staple")
    assert run_lantern("memory", "init", "--encrypt").returncode == 0
    _ask_json(f"{NOTE}\n\n{QUESTIONS[0]}")
    assert not (home / "kv-states").exists()  # a state is derived from the chat, and the notes in it
