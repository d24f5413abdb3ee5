"""`lantern serve` in front of a remote engine: a phone talks to Lantern (its tokens, its memory,
its conversations, its line of requests) and Lantern asks the real llama_cpp.server."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from openai import APIError, OpenAI

from tests.api_server import free_port, start_server
from tests.conftest import run_lantern
from tests.memory_fixtures import make_notes


@pytest.fixture
def fronted(home, remote_engine_url, tmp_path):
    """A home whose default answers come from the remote engine, served to phones by Lantern."""
    added = run_lantern("models", "add-remote", "far", remote_engine_url, "--context", "2048")
    assert added.returncode == 0, added.stderr
    server = start_server(slots=1, max_waiting=1)
    yield server
    server.stop()


def _client(server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=server.token, max_retries=0)


def test_a_phone_chats_through_lantern_with_a_remote_engine(fronted, tmp_path):
    client = _client(fronted)
    assert "far" in {m.id for m in client.models.list()}

    pieces = []
    stream = client.chat.completions.create(
        model="far",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        stream=True,
        temperature=0,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) > 1 and "".join(pieces).strip()  # passed on piece by piece

    fronted.service.assistant.memory.add([make_notes(tmp_path / "notes")])
    reply = client.chat.completions.create(
        model="far",
        messages=[{"role": "user", "content": "Who services the boiler?"}],
        max_tokens=16,
        temperature=0,
        extra_body={"lantern": {"memory": True}},
    )
    extra = reply.model_extra["lantern"]
    assert reply.choices[0].message.content and extra["citations"][0]["source"] == "home/scan.pdf"
    stored = fronted.service.assistant.conversations.get(extra["conversation_id"])
    assert [m.role for m in stored.messages] == ["user", "assistant"]
    assert (
        stored.messages[1].model == "far" and stored.messages[1].content == reply.choices[0].message.content
    )

    with pytest.raises(Exception) as refused:  # Lantern's own tokens guard the remote engine too
        OpenAI(base_url=fronted.url + "/v1", api_key="lnt_wrong", max_retries=0).models.list()
    assert getattr(refused.value, "status_code", None) == 401


def test_a_full_line_is_refused_with_retry_after_and_the_waiting_phone_is_answered_next(fronted):
    """One answer at a time is asked of the engine (serve --slots 1), one more may wait; a third
    phone is told to come back. When the first phone leaves, the waiting one is answered."""
    headers = {"Authorization": f"Bearer {fronted.token}"}
    url = fronted.url + "/v1/chat/completions"
    long = {
        "model": "far",
        "messages": [{"role": "user", "content": "Count from 1 to 300, separated by commas."}],
        "max_tokens": 400,
        "stream": True,
    }
    short = {"model": "far", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    scheduler = fronted.service.scheduler_for("far")
    answered: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: answered.append(httpx.post(url, headers=headers, json=short, timeout=120))
    )
    with httpx.stream("POST", url, headers=headers, json=long, timeout=60) as first:
        next(first.iter_lines())
        waiting.start()
        while scheduler.waiting == 0:
            time.sleep(0.02)
        full = httpx.post(url, headers=headers, json=short, timeout=60)
        assert full.status_code == 503 and full.headers["Retry-After"] == "2"
    waiting.join(timeout=180)
    assert (
        answered and answered[0].status_code == 200 and answered[0].json()["choices"][0]["message"]["content"]
    )
    assert scheduler.busy_slots == 0 and scheduler.waiting == 0


def test_an_engine_that_is_down_is_a_clear_error_for_the_phone(home):
    dead = f"http://127.0.0.1:{free_port()}"
    added = run_lantern("models", "add-remote", "gone", dead, "--context", "2048", "--no-check")
    assert added.returncode == 0, added.stderr
    server = start_server()
    try:
        with pytest.raises(APIError) as failed:
            _client(server).chat.completions.create(
                model="gone", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
        assert dead in str(failed.value)
    finally:
        server.stop()
