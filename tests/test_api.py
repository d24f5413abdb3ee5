"""`lantern serve` as phones and OpenAI clients use it: the official `openai` package, real HTTP,
the real model; and every way a client can get it wrong."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from tests.api_server import start_server
from tests.memory_fixtures import make_notes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("api-home")
    previous = os.environ.get("LANTERN_HOME")
    os.environ["LANTERN_HOME"] = str(home)
    running = start_server()
    yield running
    running.stop()
    if previous is None:
        os.environ.pop("LANTERN_HOME", None)
    else:
        os.environ["LANTERN_HOME"] = previous


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.token, max_retries=0)


def _auth(server) -> dict:
    return {"Authorization": f"Bearer {server.token}"}


def test_the_openai_client_lists_models_chats_streams_and_embeds(server, client):
    assert [m.id for m in client.models.list()] == ["smollm2-135m-instruct", "all-MiniLM-L6-v2"]

    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        temperature=0,
        max_tokens=16,
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 10

    pieces = []
    for chunk in client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=24,
        stream=True,
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) > 3

    completion = client.completions.create(model="smollm2-135m-instruct", prompt="The sky is", max_tokens=8)
    assert completion.choices[0].text

    vectors = client.embeddings.create(model="all-MiniLM-L6-v2", input=["a lighthouse", "a tomato"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384


def test_no_wrong_or_revoked_token_is_401(server):
    assert httpx.get(server.url + "/v1/models").status_code == 401
    wrong = httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer lnt_not-a-token"})
    assert wrong.status_code == 401 and "pair" in wrong.json()["error"]["message"]
    token = server.service.devices.pair("old-phone")
    assert (
        httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    server.service.devices.revoke("old-phone")
    assert (
        httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )
    assert httpx.get(server.url + "/v1/lantern/health").status_code == 200  # health needs no token


def test_bad_host_bad_origin_and_oversized_bodies_are_refused(server):
    rebinding = httpx.get(server.url + "/v1/lantern/health", headers={"Host": "attacker.example"})
    assert rebinding.status_code == 400
    other_site = httpx.get(
        server.url + "/v1/models", headers={**_auth(server), "Origin": "http://evil.example"}
    )
    assert other_site.status_code == 403
    huge = httpx.post(server.url + "/v1/chat/completions", headers=_auth(server), content=b"x" * 2_000_000)
    assert huge.status_code == 413 and "limit" in huge.json()["error"]["message"]


def test_a_prompt_over_the_context_is_400_naming_the_limit(server, client):
    with pytest.raises(openai.BadRequestError) as failure:
        client.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": "lighthouse " * 5000}]
        )
    message = failure.value.body["message"]
    assert "context window is 2048 tokens" in message


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"{not json", "JSON"),
        (json.dumps({"messages": "hello"}).encode(), "messages"),
        (json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode(), "role"),
        (
            json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}).encode(),
            "max_tokens",
        ),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}], "n": 3}).encode(), "n=1"),
    ],
)
def test_invalid_json_and_wrong_types_are_422_with_a_clear_message(server, body, problem):
    response = httpx.post(
        server.url + "/v1/chat/completions",
        headers={**_auth(server), "Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code == 422
    assert problem in response.json()["error"]["message"]


def test_tools_and_logprobs_are_refused_with_422_not_silently_dropped(client):
    question = [{"role": "user", "content": "What is the weather in Brest?"}]
    weather = {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
    }
    with pytest.raises(openai.UnprocessableEntityError) as tools:
        client.chat.completions.create(model="smollm2-135m-instruct", messages=question, tools=[weather])
    assert "tools are not supported" in tools.value.body["message"]

    with pytest.raises(openai.UnprocessableEntityError) as chat_logprobs:
        client.chat.completions.create(model="smollm2-135m-instruct", messages=question, logprobs=True)
    assert "logprobs are not supported" in chat_logprobs.value.body["message"]

    with pytest.raises(openai.UnprocessableEntityError) as completion_logprobs:
        client.completions.create(model="smollm2-135m-instruct", prompt="The sky is", logprobs=2)
    assert "logprobs are not supported" in completion_logprobs.value.body["message"]


def test_an_unknown_model_is_404(server, client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])


def test_eight_concurrent_streams_all_complete(server):
    results: dict[int, str] = {}

    def one(n: int) -> None:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key=server.token, max_retries=0, timeout=300)
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in c.chat.completions.create(
                model="smollm2-135m-instruct",
                messages=[{"role": "user", "content": f"Say something about the number {n}."}],
                max_tokens=24,
                stream=True,
            )
            if chunk.choices
        )
        results[n] = text

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(results) == list(range(8)) and all(results.values())


def test_a_client_that_disconnects_mid_stream_frees_its_slot_within_a_second(server):
    body = {
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 2000,
        "stream": True,
    }
    with httpx.Client(timeout=60) as http:
        with http.stream(
            "POST", server.url + "/v1/chat/completions", headers=_auth(server), json=body
        ) as response:
            lines = response.iter_lines()
            for line in lines:
                if '"content": "' in line and '"content": ""' not in line:
                    break
            busy = http.get(server.url + "/v1/lantern/health").json()["busy_slots"]
        gone_at = time.monotonic()
        assert busy == 1
        while (
            http.get(server.url + "/v1/lantern/health").json()["busy_slots"]
            and time.monotonic() - gone_at < 5
        ):
            time.sleep(0.02)
        freed_after = time.monotonic() - gone_at
    assert freed_after < 1.0


def test_a_full_queue_answers_503_with_retry_after(tmp_path, monkeypatch):
    monkeypatch.setenv("LANTERN_HOME", str(tmp_path / "home"))
    small = start_server(slots=1, max_waiting=1)
    try:
        # Counting goes on to the token limit, so the one slot stays busy for seconds.
        body = {
            "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
            "max_tokens": 600,
            "temperature": 0,
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {small.token}"}
        url = small.url + "/v1/completions"
        with httpx.Client(timeout=60) as http:
            with http.stream("POST", url, headers=headers, json=body) as first:
                next(first.iter_lines())
                with http.stream("POST", url, headers=headers, json=body) as second:
                    assert second.status_code == 200  # waits its turn
                    third = http.post(url, headers=headers, json=body)
                    assert third.status_code == 503 and third.headers["Retry-After"] == "2"
                    assert "busy" in third.json()["error"]["message"]
    finally:
        small.stop()


def test_a_client_that_gives_up_while_queued_is_let_go_quietly(tmp_path, monkeypatch):
    """Found by the soak: a whole (not streamed) answer whose client left before its turn came
    has no result; that is no error, and nothing is stored for it."""
    import logging

    monkeypatch.setenv("LANTERN_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    # Counting holds the one slot for seconds only without the repetition guard (with it, the
    # model may stop early).
    (tmp_path / "home" / "config.toml").write_text('[generation]\nrepetition_guard = "off"\n')
    small = start_server(slots=1, max_waiting=2)
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        headers = {"Authorization": f"Bearer {small.token}"}
        busy = {
            "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
            "max_tokens": 600,
            "temperature": 0,
            "stream": True,
        }

        def hold_the_slot() -> None:
            with httpx.stream(
                "POST", small.url + "/v1/completions", headers=headers, json=busy, timeout=60
            ) as r:
                for _ in r.iter_lines():
                    pass

        hog = threading.Thread(target=hold_the_slot)
        hog.start()
        while httpx.get(small.url + "/v1/lantern/health").json()["busy_slots"] == 0:
            time.sleep(0.05)
        for path, body in (
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
            ("/v1/completions", {"prompt": "Hi", "max_tokens": 4}),
        ):
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(small.url + path, headers=headers, json=body, timeout=1.0)
        hog.join()
        assert small.service.assistant.conversations.list() == []
        answered = httpx.post(
            small.url + "/v1/chat/completions",
            headers=headers,
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            timeout=120,
        )
        assert answered.status_code == 200 and answered.json()["choices"][0]["message"]["content"]
        assert errors == []
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
        small.stop()


def test_memory_citations_notes_and_conversations_for_a_phone(server, client, tmp_path):
    server.service.assistant.memory.add([make_notes(tmp_path / "notes")])
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Who services the boiler?"}],
        max_tokens=24,
        temperature=0,
        extra_body={"lantern": {"memory": True}},
    )
    extra = reply.model_extra["lantern"]
    assert extra["citations"][0]["source"] == "home/scan.pdf"
    conversation_id = extra["conversation_id"]

    note = httpx.post(
        server.url + "/v1/lantern/notes",
        headers=_auth(server),
        json={"title": "Parking", "text": "The van is parked behind the old mill."},
    )
    assert note.status_code == 201
    found = httpx.post(
        server.url + "/v1/lantern/memory/search",
        headers=_auth(server),
        json={"query": "where is the van parked", "k": 1},
    ).json()["hits"]
    assert found[0]["source"] == "notes/Parking.md"

    listed = httpx.get(server.url + "/v1/lantern/conversations", headers=_auth(server)).json()[
        "conversations"
    ]
    assert conversation_id in [c["id"] for c in listed]
    client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "And when?"}],
        max_tokens=8,
        extra_body={"lantern": {"conversation_id": conversation_id}},
    )
    fetched = httpx.get(
        server.url + f"/v1/lantern/conversations/{conversation_id}", headers=_auth(server)
    ).json()
    assert [m["content"] for m in fetched["messages"] if m["role"] == "user"] == [
        "Who services the boiler?",
        "And when?",
    ]
    cited = fetched["messages"][1]["citations"]  # kept with the answer, for a phone reopening it later
    assert cited[0]["source"] == "home/scan.pdf" and cited[0]["text"] == extra["citations"][0]["text"]
    missing = httpx.get(server.url + "/v1/lantern/conversations/nope", headers=_auth(server))
    assert missing.status_code == 404

    # A phone rates the first answer by giving a better one: a preference pair for the twin.
    answer = next(m for m in fetched["messages"] if m["role"] == "assistant")
    rated = httpx.post(
        server.url + "/v1/lantern/feedback",
        headers=_auth(server),
        json={
            "conversation_id": conversation_id,
            "message_id": answer["id"],
            "rating": -1,
            "edited": "Anna services the boiler.",
        },
    )
    assert rated.status_code == 201, rated.text
    pairs = server.service.assistant.conversations.preference_pairs()
    assert pairs[-1].chosen == "Anna services the boiler." and pairs[-1].rejected == answer["content"]
    wrong = httpx.post(
        server.url + "/v1/lantern/feedback",
        headers=_auth(server),
        json={"conversation_id": conversation_id, "message_id": -5, "rating": 1},
    )
    assert wrong.status_code == 404
    bad = httpx.post(
        server.url + "/v1/lantern/feedback",
        headers=_auth(server),
        json={"conversation_id": conversation_id, "message_id": answer["id"], "rating": 5},
    )
    assert bad.status_code == 422


def test_the_committed_openapi_schema_matches_the_app(server):
    from pathlib import Path

    from android_client_api.app import create_app

    committed = Path(__file__).parents[1] / "android_client_api" / "openapi.json"
    live = create_app(server.service).openapi()
    assert json.loads(committed.read_text()) == live, (
        "android_client_api/openapi.json is stale; regenerate it with "
        "'.venv/bin/python -m android_client_api.export_openapi'"
    )


def test_an_empty_or_answerless_prompt_is_400_and_harms_no_other_answer(server, client):
    results = {}

    def long_answer() -> None:
        reply = client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "Count to twenty."}],
            max_tokens=48,
        )
        results["other"] = reply.choices[0].message.content

    other = threading.Thread(target=long_answer)
    other.start()
    empty = httpx.post(server.url + "/v1/completions", headers=_auth(server), json={"prompt": ""})
    no_question = httpx.post(
        server.url + "/v1/chat/completions",
        headers=_auth(server),
        json={"messages": [{"role": "assistant", "content": "hello"}]},
    )
    other.join(timeout=120)
    assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"]
    assert no_question.status_code == 400
    assert results["other"]  # the answer being generated meanwhile was not harmed


def test_a_chunked_body_over_the_limit_is_413_too(server):
    def chunks():
        for _ in range(40):
            yield b"x" * 50_000

    response = httpx.post(server.url + "/v1/chat/completions", headers=_auth(server), content=chunks())
    assert response.status_code == 413


def test_ipv6_listen_addresses_are_accepted_as_host_headers():
    from app.cli.serve import _host_names

    assert _host_names("fd00::5") == ["[fd00::5]"] and _host_names("192.168.1.4") == ["192.168.1.4"]
    assert _host_names("0.0.0.0") == []


def test_a_non_streaming_client_that_gives_up_frees_its_slot(server):
    body = {"prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": 2000, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", headers=_auth(server), json=body, timeout=1.5)
    gone_at = time.monotonic()
    while (
        httpx.get(server.url + "/v1/lantern/health").json()["busy_slots"] and time.monotonic() - gone_at < 5
    ):
        time.sleep(0.05)
    assert time.monotonic() - gone_at < 1.0


def _stream_chat(server, body: dict) -> tuple[str, dict]:
    """A streamed chat as the web client sends it: the answer and the final chunk's `lantern`."""
    text, lantern = "", {}
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        headers=_auth(server),
        json={"stream": True, "temperature": 0, "max_tokens": 12, **body},
        timeout=120,
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            text += chunk["choices"][0]["delta"].get("content") or ""
            lantern = chunk.get("lantern", lantern)
    return text, lantern


def _conversation(server, conversation_id: str) -> httpx.Response:
    return httpx.get(server.url + f"/v1/lantern/conversations/{conversation_id}", headers=_auth(server))


def test_a_phone_keeps_finds_renames_and_deletes_its_conversations(server):
    question = "Name a colour of the Norwegian flag."
    answer, lantern = _stream_chat(
        server, {"messages": [{"role": "user", "content": question}], "lantern": {"save": True}}
    )
    conversation_id = lantern["conversation_id"]
    assert answer and lantern["model"] == "smollm2-135m-instruct" and lantern["message_id"]
    stored = _conversation(server, conversation_id).json()
    assert [(m["role"], m["content"]) for m in stored["messages"]] == [
        ("user", question),
        ("assistant", answer),
    ]
    assert stored["messages"][1]["id"] == lantern["message_id"]
    assert stored["messages"][1]["model"] == "smollm2-135m-instruct"
    assert stored["system_prompt"]  # the system prompt it was asked with, so continuing it asks the same way

    listing = server.url + "/v1/lantern/conversations"
    assert httpx.get(listing, headers=_auth(server)).json()["conversations"][0]["id"] == conversation_id
    found = httpx.get(listing, params={"q": "norwegian"}, headers=_auth(server)).json()["conversations"]
    assert [c["id"] for c in found] == [conversation_id]
    assert httpx.get(listing, params={"q": "zebra-xylophone"}, headers=_auth(server)).json() == {
        "conversations": []
    }

    renamed = httpx.patch(f"{listing}/{conversation_id}", headers=_auth(server), json={"title": "Flags"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Flags"
    assert _conversation(server, conversation_id).json()["title"] == "Flags"
    blank = httpx.patch(f"{listing}/{conversation_id}", headers=_auth(server), json={"title": "   "})
    assert blank.status_code == 422 and "empty" in blank.json()["error"]["message"]
    unknown = httpx.patch(f"{listing}/nope", headers=_auth(server), json={"title": "x"})
    assert unknown.status_code == 404

    assert httpx.delete(f"{listing}/{conversation_id}", headers=_auth(server)).status_code == 204
    assert _conversation(server, conversation_id).status_code == 404
    assert httpx.delete(f"{listing}/{conversation_id}", headers=_auth(server)).status_code == 404
    assert httpx.delete(f"{listing}/{conversation_id}").status_code == 401


def test_regenerating_or_editing_the_last_message_replaces_only_the_last_exchange(server):
    first = "What is the capital of France?"
    _, lantern = _stream_chat(
        server, {"messages": [{"role": "user", "content": first}], "lantern": {"save": True}}
    )
    conversation_id = lantern["conversation_id"]
    second = "And of Italy?"
    answer, lantern = _stream_chat(
        server,
        {"messages": [{"role": "user", "content": second}], "lantern": {"conversation_id": conversation_id}},
    )
    before = _conversation(server, conversation_id).json()["messages"]

    again, regenerated = _stream_chat(
        server,
        {
            "messages": [{"role": "user", "content": second}],
            "lantern": {"conversation_id": conversation_id, "regenerate": True},
        },
    )
    after = _conversation(server, conversation_id).json()["messages"]
    assert again == answer  # temperature 0, the same history: the same answer, asked again
    assert after[:2] == before[:2] and len(after) == 4
    assert after[3]["id"] == regenerated["message_id"] != before[3]["id"]

    edited = "And of Spain?"
    _stream_chat(
        server,
        {
            "messages": [{"role": "user", "content": edited}],
            "lantern": {"conversation_id": conversation_id, "regenerate": True},
        },
    )
    after_edit = _conversation(server, conversation_id).json()["messages"]
    assert [m["content"] for m in after_edit if m["role"] == "user"] == [first, edited]

    lone = httpx.post(
        server.url + "/v1/chat/completions",
        headers=_auth(server),
        json={"messages": [{"role": "user", "content": "hi"}], "lantern": {"regenerate": True}},
    )
    assert lone.status_code == 422 and "conversation_id" in lone.json()["error"]["message"]


def test_an_answer_stopped_half_way_is_kept_in_its_conversation(server):
    _, lantern = _stream_chat(
        server, {"messages": [{"role": "user", "content": "Say hello."}], "lantern": {"save": True}}
    )
    conversation_id = lantern["conversation_id"]
    body = {
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}],
        "max_tokens": 2000,
        "stream": True,
        "lantern": {"conversation_id": conversation_id},
    }
    received = ""
    with httpx.stream(
        "POST", server.url + "/v1/chat/completions", headers=_auth(server), json=body
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                received += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            if len(received) > 20:
                break  # the user taps Stop
    deadline = time.monotonic() + 30
    while len(messages := _conversation(server, conversation_id).json()["messages"]) < 4:
        assert time.monotonic() < deadline, messages
        time.sleep(0.1)
    kept = messages[3]["content"]
    assert kept.startswith(received) and len(kept) < 2000 * 4  # what was said, not a whole story


def test_a_phone_lists_the_models_it_may_pick(server, client):
    listed = httpx.get(server.url + "/v1/lantern/models", headers=_auth(server)).json()
    assert listed["default"] == "smollm2-135m-instruct"
    assert {"id": "smollm2-135m-instruct", "kind": "model", "base": None} in listed["models"]
    with pytest.raises(openai.NotFoundError, match="choose one of: smollm2-135m-instruct"):
        client.chat.completions.create(model="no-such-twin", messages=[{"role": "user", "content": "hi"}])


def test_a_change_of_mind_replaces_the_earlier_thumb_and_a_stopped_chat_knows_its_conversation(server):
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        headers=_auth(server),
        json={
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "stream": True,
            "lantern": {"save": True},
        },
    ) as response:
        events = (json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {"))
        conversation_id = next(events)["lantern"]["conversation_id"]  # told before any token
        next(e for e in events if e["choices"][0]["delta"].get("content"))  # then Stop, after a word
    deadline = time.monotonic() + 30
    while _conversation(server, conversation_id).status_code == 404:  # the cut answer is being kept
        assert time.monotonic() < deadline
        time.sleep(0.1)
    answer = _conversation(server, conversation_id).json()["messages"][-1]
    for rating in (1, -1):
        rated = httpx.post(
            server.url + "/v1/lantern/feedback",
            headers=_auth(server),
            json={"conversation_id": conversation_id, "message_id": answer["id"], "rating": rating},
        )
        assert rated.status_code == 201
    pairs = [
        p for p in server.service.assistant.conversations.preference_pairs() if p.message_id == answer["id"]
    ]
    assert [(p.rating, p.rejected) for p in pairs] == [(-1, answer["content"])]
