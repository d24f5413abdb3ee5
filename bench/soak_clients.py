"""The clients of bench_soak.py: what each of them sends to `lantern serve`, and the tally.

Every request is one of three sorts. A *good* request must succeed (2xx, with the body it
promises); a *bad* request must get the 4xx it deserves; a *disconnect* opens a stream and walks
away after a chunk or two. A 503 with Retry-After is back-pressure: counted, waited out, retried.
Once the bench starts killing the server (``Tally.killing``), a request that dies on the wire is
counted as cut by the kill, not as a failure.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import httpx

QUESTIONS = (
    "What colour is the granite of the lighthouse?",
    "How often is the sourdough starter fed?",
    "Name three fruits.",
    "Say hello in French.",
    "What is two plus two?",
    "Give me a tip for a rainy day.",
    "Which day is the bins collected?",
    "What is the boat called?",
)
FOLLOW_UPS = ("Tell me more.", "Say it in one sentence.", "Why?", "And then?")
BODY_LIMIT = 1_000_000  # ServerSettings.max_body_bytes
MAX_RETRIES_503 = 5
REQUEST_TIMEOUT = 180.0


@dataclass
class Answer:
    message_id: int | None
    text: str


@dataclass
class Tally:
    """Everything the clients saw, behind one lock."""

    killing: threading.Event = field(default_factory=threading.Event)
    counts: dict = field(default_factory=lambda: defaultdict(Counter))
    errors: list[str] = field(default_factory=list)
    chat_latency: list[float] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)
    # conversation id -> every answer received in full (the server saved it before sending it)
    answered: dict[str, list[Answer]] = field(default_factory=dict)
    cut_by_kill: set[str] = field(default_factory=set)  # ids whose answer the kill interrupted
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.counts[kind][outcome] += 1
            if outcome in ("failed", "surprise") and len(self.errors) < 12:
                self.errors.append(f"{kind} {outcome}: {detail[:300]}")

    def answer(self, conversation_id: str, answer: Answer) -> None:
        with self.lock:
            self.answered.setdefault(conversation_id, []).append(answer)


class Client:
    """One phone: its own connection pool, its own conversations, a seeded random stream."""

    def __init__(self, url: str, token: str, tally: Tally, rng: random.Random, facts: list[str]):
        self.url, self.token, self.tally, self.rng, self.facts = url, token, tally, rng, facts
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=REQUEST_TIMEOUT
        )
        self.mine: list[str] = []  # this client's conversations (only it continues them)

    def run(self, stop: threading.Event) -> None:
        actions = [
            (self.chat_stream, 4),
            (self.chat, 2),
            (self.text_completion, 1),
            (self.memory_search, 2),
            (self.list_conversations, 1),
            (self.get_conversation, 1),
            (self.feedback, 1),
            (self.disconnect, 1),
            (self.bad_request, 3),
        ]
        functions, weights = zip(*actions, strict=True)
        try:
            while not stop.is_set():
                action = self.rng.choices(functions, weights)[0]
                self._guarded(action.__name__, action)
        finally:
            self.http.close()

    # --- good requests --------------------------------------------------------------------------

    def chat_stream(self) -> None:
        body, continuing = self._chat_body(stream=True)
        started, conversation_id, pieces, final = time.monotonic(), None, [], None
        with self.http.stream("POST", "/v1/chat/completions", json=body) as r:
            if not self._accepted("chat_stream", r):
                return
            try:
                for data in _events(r):
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    extra = chunk.get("lantern") or {}
                    if conversation_id is None and extra.get("conversation_id"):
                        conversation_id = extra["conversation_id"]
                    delta = chunk["choices"][0]["delta"].get("content")
                    if delta:
                        if not pieces:
                            self.tally.first_token.append(time.monotonic() - started)
                        pieces.append(delta)
                    if "message_id" in extra:
                        final = extra
            except httpx.TransportError:
                if self.tally.killing.is_set() and conversation_id:
                    with self.tally.lock:
                        self.tally.cut_by_kill.add(conversation_id)
                raise
        if final is None or not final.get("conversation_id"):
            self.tally.count("chat_stream", "failed", f"stream ended without its last chunk: {pieces!r}")
            return
        self._answered("chat_stream", final, "".join(pieces), started, continuing)

    def chat(self) -> None:
        body, continuing = self._chat_body(stream=False)
        started = time.monotonic()
        r = self._send("chat", "POST", "/v1/chat/completions", json=body)
        if r is None:
            return
        reply = r.json()
        text = reply["choices"][0]["message"]["content"]
        self._answered("chat", reply.get("lantern") or {}, text, started, continuing)

    def text_completion(self) -> None:
        body = {"prompt": "The lighthouse keeper", "max_tokens": self.rng.randint(8, 24)}
        r = self._send("text_completion", "POST", "/v1/completions", json=body)
        if r is not None:
            self._ok_if("text_completion", bool(r.json()["choices"][0]["text"]), r.text)

    def memory_search(self) -> None:
        query = self.rng.choice(self.facts)
        r = self._send("memory_search", "POST", "/v1/lantern/memory/search", json={"query": query, "k": 3})
        if r is not None:
            self._ok_if("memory_search", bool(r.json()["hits"]), f"no hits for {query!r}: {r.text}")

    def list_conversations(self) -> None:
        r = self._send("list_conversations", "GET", "/v1/lantern/conversations", params={"limit": 20})
        if r is not None:
            self._ok_if("list_conversations", "conversations" in r.json(), r.text)

    def get_conversation(self) -> None:
        if not self.mine:
            return self.list_conversations()
        conversation_id = self.rng.choice(self.mine)
        r = self._send("get_conversation", "GET", f"/v1/lantern/conversations/{conversation_id}")
        if r is None:
            return
        stored = {m["id"]: m["content"] for m in r.json()["messages"]}
        with self.tally.lock:
            answers = list(self.tally.answered.get(conversation_id, ()))
        missing = [a for a in answers if stored.get(a.message_id) is None]
        self._ok_if("get_conversation", not missing, f"{conversation_id} lacks answers {missing!r}")

    def feedback(self) -> None:
        with self.tally.lock:
            rated = [(c, a) for c in self.mine for a in self.tally.answered.get(c, ()) if a.message_id]
        if not rated:
            return self.memory_search()
        conversation_id, answer = self.rng.choice(rated)
        body = {"conversation_id": conversation_id, "message_id": answer.message_id, "rating": 1}
        if self.rng.random() < 0.5:
            body["rating"] = -1
        self._send("feedback", "POST", "/v1/lantern/feedback", json=body)

    # --- walking away ---------------------------------------------------------------------------

    def disconnect(self) -> None:
        """A phone that loses its signal: read a chunk or two of a stream, then drop the socket."""
        body, _ = self._chat_body(stream=True)
        body["max_tokens"] = 64
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.rng.random() < 0.3:  # a whole (non-streamed) answer the phone stops waiting for
            body["stream"] = False
            with httpx.Client(base_url=self.url, timeout=0.5) as impatient:
                try:
                    impatient.post("/v1/chat/completions", json=body, headers=headers)
                except httpx.TimeoutException:
                    pass
            return self.tally.count("disconnect", "ok")
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT) as own:
            with own.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                if not self._accepted("disconnect", r):
                    return
                wanted = self.rng.randint(1, 3)
                for seen, _ in enumerate(_events(r), start=1):
                    if seen >= wanted:
                        break
        self.tally.count("disconnect", "ok")

    # --- bad requests ---------------------------------------------------------------------------

    def bad_request(self) -> None:
        kind = self.rng.choice(list(BAD_REQUESTS))
        method, path, kwargs, expected = BAD_REQUESTS[kind](self)
        kwargs.setdefault("headers", {"Authorization": f"Bearer {self.token}"})
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT) as raw:  # no default token
            try:
                r = raw.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if self.tally.killing.is_set():
                    return self.tally.count("bad:" + kind, "cut_by_kill")
                return self.tally.count("bad:" + kind, "surprise", f"{type(exc).__name__}: {exc}")
        if r.status_code in expected:
            self.tally.count("bad:" + kind, "expected_4xx")
        else:
            self.tally.count("bad:" + kind, "surprise", f"HTTP {r.status_code} (wanted {expected}): {r.text}")

    # --- plumbing -------------------------------------------------------------------------------

    def _chat_body(self, stream: bool) -> tuple[dict, bool]:
        continuing = bool(self.mine) and self.rng.random() < 0.4
        options: dict = {"save": True}
        if continuing:
            options = {"conversation_id": self.rng.choice(self.mine)}
            question = self.rng.choice(FOLLOW_UPS)
        else:
            question = self.rng.choice(QUESTIONS)
            if self.rng.random() < 0.3:
                options = {"memory": True}
        body = {
            "messages": [{"role": "user", "content": question}],
            "max_tokens": self.rng.randint(24, 48),
            "stream": stream,
            "lantern": options,
        }
        return body, continuing

    def _answered(self, kind: str, saved: dict, text: str, started: float, continuing: bool) -> None:
        conversation_id = saved.get("conversation_id")
        if not conversation_id or not saved.get("message_id"):
            return self.tally.count(kind, "failed", f"answer without conversation/message id: {saved!r}")
        self.tally.chat_latency.append(time.monotonic() - started)
        self.tally.answer(conversation_id, Answer(saved["message_id"], text))
        if conversation_id not in self.mine:
            self.mine.append(conversation_id)
        self.tally.count(kind, "ok")

    def _send(self, kind: str, method: str, path: str, **kwargs) -> httpx.Response | None:
        """A good request, retried after a 503's Retry-After; the 2xx response, else None (counted)."""
        for _ in range(MAX_RETRIES_503 + 1):
            r = self.http.request(method, path, **kwargs)
            if r.status_code == 503 and "retry-after" in r.headers:
                self.tally.count(kind, "backpressure_503")
                time.sleep(min(float(r.headers["retry-after"]), 10))
                continue
            if r.is_success:
                return r
            self.tally.count(kind, "failed", f"HTTP {r.status_code}: {r.text}")
            return None
        self.tally.count(kind, "failed", f"still 503 after {MAX_RETRIES_503} retries")
        return None

    def _accepted(self, kind: str, r: httpx.Response) -> bool:
        """For streams: a 200 goes on; a 503 is back-pressure (waited out); anything else failed."""
        if r.status_code == 200:
            return True
        r.read()
        if r.status_code == 503 and "retry-after" in r.headers:
            self.tally.count(kind, "backpressure_503")
            time.sleep(min(float(r.headers["retry-after"]), 10))
        else:
            self.tally.count(kind, "failed", f"HTTP {r.status_code}: {r.text}")
        return False

    def _ok_if(self, kind: str, good: bool, detail: str) -> None:
        self.tally.count(kind, "ok" if good else "failed", detail)

    def _guarded(self, kind: str, action) -> None:
        """Run one action; a dropped connection is a failure, unless the bench is killing the server."""
        with self.tally.lock:
            self.tally.in_flight += 1
        try:
            action()
        except (httpx.TransportError, httpx.StreamError) as exc:
            if self.tally.killing.is_set():
                self.tally.count(kind, "cut_by_kill")
            else:
                self.tally.count(kind, "failed", f"{type(exc).__name__}: {exc}")
        except (KeyError, IndexError, TypeError, ValueError) as exc:  # a body not shaped as promised
            self.tally.count(kind, "failed", f"{type(exc).__name__}: {exc}")
        finally:
            with self.tally.lock:
                self.tally.in_flight -= 1


def _events(r: httpx.Response):
    """The ``data:`` payloads of a server-sent event stream."""
    for line in r.iter_lines():
        if line.startswith("data: "):
            yield line[len("data: ") :]


def _oversized_chunks():
    piece = b"x" * 65536
    yield b'{"messages": [{"role": "user", "content": "'
    for _ in range(BODY_LIMIT // len(piece) + 2):
        yield piece
    yield b'"}]}'


# name -> (client -> (method, path, request kwargs, accepted statuses))
BAD_REQUESTS = {
    "no_token": lambda c: ("GET", "/v1/lantern/conversations", {"headers": {}}, {401}),
    "wrong_token": lambda c: (
        "POST",
        "/v1/chat/completions",
        {"headers": {"Authorization": "Bearer lnt_not-a-token"}, "json": {"messages": []}},
        {401},
    ),
    "malformed_json": lambda c: (
        "POST",
        "/v1/chat/completions",
        {"content": b'{"messages": [{"role": "user", "content": "hi"', "headers": _json_auth(c)},
        {400, 422},
    ),
    "over_limit": lambda c: (
        "POST",
        "/v1/chat/completions",
        {"content": b"{" + b" " * (BODY_LIMIT + 10) + b"}", "headers": _json_auth(c)},
        {413},
    ),
    "over_limit_chunked": lambda c: (
        "POST",
        "/v1/chat/completions",
        {"content": _oversized_chunks(), "headers": _json_auth(c)},
        {413},
    ),
    "invalid_utf8": lambda c: (
        "POST",
        "/v1/chat/completions",
        {
            "content": b'{"messages": [{"role": "user", "content": "\xff\xfe caf\xe9"}]}',
            "headers": _json_auth(c),
        },
        {400, 422},
    ),
    "unknown_conversation": lambda c: ("GET", "/v1/lantern/conversations/0123456789ab", {}, {404}),
    "unknown_conversation_chat": lambda c: (
        "POST",
        "/v1/chat/completions",
        {"json": {"messages": [{"role": "user", "content": "hi"}], "lantern": {"conversation_id": "nope"}}},
        {404},
    ),
    "path_traversal": lambda c: (
        "GET",
        "/v1/lantern/conversations/"
        + c.rng.choice(["..%2F..%2Fconversations.sqlite3", "%2e%2e%2fconfig.toml"]),
        {},
        {400, 404, 422},
    ),
    "unknown_feedback": lambda c: (
        "POST",
        "/v1/lantern/feedback",
        {"json": {"conversation_id": "0123456789ab", "message_id": 999999, "rating": 1}},
        {404},
    ),
}


def _json_auth(c: Client) -> dict:
    return {"Authorization": f"Bearer {c.token}", "Content-Type": "application/json"}
