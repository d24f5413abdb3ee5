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
from tests.fake_engine import FakeMisbehavingEngine
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


def test_a_full_line_is_refused_and_a_phone_that_leaves_frees_its_place(home):
    """One answer at a time is asked of the engine (serve --slots 1) and one more may wait; a
    third phone is told to come back. The engine here is a fake that stalls after its first word
    (a slow engine cannot be had on demand from the real one), so the first answer holds its place
    for as long as the test needs; when that phone leaves, the waiting one is answered."""
    stalling = FakeMisbehavingEngine("stall", delay=4.0)
    assert run_lantern("models", "add-remote", "far", stalling.url).returncode == 0
    server = start_server(slots=1, max_waiting=1)
    try:
        headers = {"Authorization": f"Bearer {server.token}"}
        url = server.url + "/v1/chat/completions"
        ask = {"model": "far", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
        scheduler = server.service.scheduler_for("far")
        answered: list[httpx.Response] = []
        second = threading.Thread(
            target=lambda: answered.append(httpx.post(url, headers=headers, json=ask, timeout=60))
        )
        with httpx.stream("POST", url, headers=headers, json={**ask, "stream": True}, timeout=60) as first:
            lines = first.iter_lines()
            while "lighthouse" not in next(lines):  # the engine's first word has come through
                pass
            second.start()
            while scheduler.waiting == 0:
                time.sleep(0.02)
            third = httpx.post(url, headers=headers, json=ask, timeout=60)
            assert third.status_code == 503 and third.headers["Retry-After"] == "2"
        second.join(timeout=60)
        assert answered and answered[0].status_code == 200
        assert answered[0].json()["choices"][0]["message"]["content"].startswith("The lighthouse")
        assert scheduler.busy_slots == 0 and scheduler.waiting == 0
        assert stalling.chat_requests == 2  # the refused phone never reached the engine
    finally:
        server.stop()
        stalling.stop()


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


def test_an_answer_the_engine_cuts_half_way_reaches_the_phone_and_is_kept_marked_cut(home):
    """The fake engine drops its connection after three pieces (a real one cannot be made to on
    demand): the phone gets those pieces, then the answer stored with the conversation, partial
    and marked as cut, which is what the conversation route shows later."""
    cutting = FakeMisbehavingEngine("cut")
    assert run_lantern("models", "add-remote", "far", cutting.url, "--context", "2048").returncode == 0
    server = start_server()
    try:
        reply = _client(server).chat.completions.create(
            model="far",
            messages=[{"role": "user", "content": "Who kept the lighthouse?"}],
            max_tokens=32,
            extra_body={"lantern": {"save": True}},
        )
        partial = "".join(FakeMisbehavingEngine.PIECES)
        assert reply.choices[0].message.content == partial
        extra = reply.model_extra["lantern"]
        assert extra["cut"] is True
        headers = {"Authorization": f"Bearer {server.token}"}
        shown = httpx.get(
            f"{server.url}/v1/lantern/conversations/{extra['conversation_id']}", headers=headers
        ).json()
        answer = shown["messages"][-1]
        assert answer["role"] == "assistant" and answer["content"] == partial and answer["cut"] is True
        assert shown["messages"][0]["cut"] is False
    finally:
        server.stop()
        cutting.stop()
