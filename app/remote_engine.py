"""A chat engine served elsewhere: any OpenAI-compatible server (llama-server, vLLM, SGLang,
Ollama, TGI, llama_cpp.server, another Lantern), spoken to over HTTP.

Prompts, memory passages and the trimming of old turns are done here, as for the local engine;
only the answering happens on the server. What a user sees is kept the same as locally: stop
strings are also matched here (servers differ in whether they hold the stop text back), a cancel
ends a read blocked on the network at once, and a stream that breaks off half way keeps its
partial answer with ``finish_reason="cut"``.

The API key is read from its environment variable for each request and is never kept on the
engine, put in an error message or logged: errors name the URL and the HTTP status only.
"""

from __future__ import annotations

import json
import math
import os
import socket
import ssl
import time
from collections.abc import Generator
from dataclasses import dataclass

import httpx

from app.chat_engine import DEFAULT_SETTINGS, ChatResult, ChatStream, drain
from app.chat_template import ChatMessage, validate_messages
from app.config import RemoteConfig
from app.context_budget import PromptPlan, fit_to_context
from app.decoding import GenerationSettings
from app.engine_text import StopMatcher
from app.errors import ContextOverflowError, LanternError
from app.model_store import RemoteModel

# Prompt sizes are estimated, not counted: the server applies its own chat template, and asking
# it to tokenize costs a round trip per message (and on llama_cpp.server takes its global lock,
# which waits for, or with its default settings cuts off, a running answer). Three bytes per token
# over-counts English (about four), so a prompt Lantern thinks fits really does.
BYTES_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 4  # the template's role markers around each message
TOKENS_PER_PROMPT = 8  # and around the whole prompt
RETRY_STATUSES = (502, 503, 504)  # a proxy or a loading server: worth another try


class EngineUnavailableError(LanternError):
    """The remote engine did not answer (down, unreachable, or too slow to send anything)."""


class EngineCutError(LanternError):
    """The remote engine's stream broke off after text was streamed; the partial answer is kept."""


@dataclass(frozen=True)
class EngineFacts:
    """What the probe learnt: the window the engine holds and the model id it answers to."""

    context_length: int | None  # None: the engine does not say
    model_ids: tuple[str, ...]


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


class RemoteEngine:
    """An OpenAI-compatible server answering chats for Lantern (a ``ChatEngine``)."""

    def __init__(self, entry: RemoteModel, config: RemoteConfig, fallback_context: int = 4096):
        """Probes the engine once: a dead URL fails here with one line naming it.
        ``fallback_context``: the window used when neither the entry nor the engine gives one."""
        self.name = entry.name
        self.url = entry.url
        self.model = entry.model
        self.api_key_env = entry.api_key_env
        self.config = config
        verify: ssl.SSLContext | bool = True
        if entry.ca_bundle:
            try:
                verify = ssl.create_default_context(cafile=entry.ca_bundle)
            except OSError as exc:
                raise LanternError(
                    f"cannot read the CA bundle {entry.ca_bundle} of model {entry.name!r}: {exc.strerror}"
                ) from None
        self._client = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            verify=verify,
        )
        try:
            facts = self.probe()
        except BaseException:
            self._client.close()
            raise
        if not self.model and facts.model_ids:
            self.model = facts.model_ids[0]
        reported, configured = facts.context_length, entry.context_length
        if reported and configured:
            self.context_length = min(reported, configured)
        else:
            self.context_length = reported or configured or fallback_context

    def __repr__(self) -> str:
        return f"RemoteEngine({self.name!r}, {self.url!r})"

    # -- the ChatEngine surface ---------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def tokenize_chat(self, messages: list[ChatMessage]) -> list[int]:
        """Placeholder ids, as many as the estimate: only their count is ever used."""
        count = sum(estimate_tokens(m.content) + TOKENS_PER_MESSAGE for m in messages)
        return [0] * (count + TOKENS_PER_PROMPT)

    def plan(self, messages: list[ChatMessage], max_tokens: int) -> PromptPlan:
        return fit_to_context(messages, self.tokenize_chat, self.context_length, max_tokens)

    def stream_chat(
        self, messages: list[ChatMessage], settings: GenerationSettings = DEFAULT_SETTINGS
    ) -> ChatStream:
        """Send the chat and wait for the engine to start answering; a down engine, a refused
        request or a prompt the engine finds too long raise here, before any text is streamed."""
        started = time.perf_counter()
        validate_messages(messages)
        stream = ChatStream(self.plan(messages, settings.max_tokens))
        response = self._send("POST", "/v1/chat/completions", json=self._body(stream.plan, settings))
        stream._on_cancel = lambda: _wake_reader(response)
        stream._pieces = self._read(stream, response, settings, started)
        return stream

    def chat(
        self, messages: list[ChatMessage], settings: GenerationSettings = DEFAULT_SETTINGS
    ) -> ChatResult:
        return drain(self.stream_chat(messages, settings))

    def close(self) -> None:
        self._client.close()

    # -- talking to the engine ----------------------------------------------------------------
    def probe(self) -> EngineFacts:
        """The engine's context window, from the first of these that says: llama-server's /props,
        /v1/models (vLLM and SGLang's max_model_len, Lantern's context_length), TGI's /info."""
        models = self._get_json("/v1/models")  # also the check that the engine is there at all
        entries = [m for m in (models or {}).get("data", []) if isinstance(m, dict)]
        ids = tuple(str(m["id"]) for m in entries if "id" in m)
        props = self._get_json("/props", only_if_there=True) or {}
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        if not n_ctx:
            mine = [m for m in entries if m.get("id") == self.model] or entries[:1]
            sizes = (m.get(k) for m in mine for k in ("max_model_len", "context_length"))
            n_ctx = next((size for size in sizes if size), None)
        if not n_ctx:
            n_ctx = (self._get_json("/info", only_if_there=True) or {}).get("max_total_tokens")
        return EngineFacts(int(n_ctx) if isinstance(n_ctx, int | float) and n_ctx > 0 else None, ids)

    def _get_json(self, path: str, only_if_there: bool = False) -> dict | None:
        """``path``'s JSON, or None when the engine has no such route. ``only_if_there``: any refusal
        is None too (an engine that guards every path answers 401 for one it does not have)."""
        response = self._send("GET", path, optional=True, any_refusal=only_if_there)
        if response is None:
            return None
        try:
            response.read()
            data = response.json()
        except (ValueError, httpx.HTTPError):
            return None
        finally:
            response.close()
        return data if isinstance(data, dict) else None

    def _headers(self) -> dict[str, str]:
        if not self.api_key_env:
            return {}
        key = os.environ.get(self.api_key_env)
        if not key:
            raise LanternError(
                f"model {self.name!r} needs its API key in ${self.api_key_env}; set that variable"
            )
        return {"Authorization": f"Bearer {key}"}

    def _body(self, plan: PromptPlan, settings: GenerationSettings) -> dict:
        body: dict = {
            "messages": [{"role": m.role, "content": m.content} for m in plan.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": plan.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
        }
        if self.model:
            body["model"] = self.model
        if settings.seed is not None:
            body["seed"] = settings.seed
        if settings.stop:
            body["stop"] = list(settings.stop)
        return body

    def _send(
        self, method: str, path: str, *, optional: bool = False, any_refusal: bool = False, **kwargs
    ) -> httpx.Response | None:
        """Open a streamed response, trying again with backoff while the engine is down (nothing
        has been streamed yet, so a retry cannot repeat an answer). ``optional``: None for a route
        the engine lacks (404, 405; with ``any_refusal``, any 4xx)."""
        headers = self._headers()
        reason = ""
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(0.25 * 2 ** (attempt - 1))
            try:
                request = self._client.build_request(method, path, headers=headers, **kwargs)
                response = self._client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                reason = _describe(exc)
                if _is_tls_failure(exc):
                    raise LanternError(
                        f"the engine at {self.url} failed TLS verification ({reason}); give its CA "
                        "with 'lantern models add-remote ... --ca-bundle PATH'"
                    ) from None
                continue
            except httpx.TimeoutException:
                raise EngineUnavailableError(
                    f"the engine at {self.url} sent nothing for {self.config.timeout_s:g} s; "
                    "raise [remote] timeout_s in the config if it is just slow"
                ) from None
            if response.status_code in RETRY_STATUSES:
                reason = f"HTTP {response.status_code}"
                response.close()
                continue
            if response.is_success:
                return response
            message = _error_message(response)
            if optional and (
                response.status_code in (404, 405) or (any_refusal and response.is_client_error)
            ):
                return None
            raise self._refusal(response.status_code, message)
        raise EngineUnavailableError(
            f"the engine at {self.url} is not answering ({reason}, {self.config.retries + 1} tries); "
            "is it running?"
        )

    def _refusal(self, status: int, message: str) -> LanternError:
        if status in (401, 403):
            where = f"${self.api_key_env}" if self.api_key_env else "--api-key-env (none is set)"
            return LanternError(
                f"the engine at {self.url} refused the request (HTTP {status}); check the key in {where}"
            )
        if status == 400 and "context" in message.lower():
            return ContextOverflowError(f"the engine at {self.url} found the prompt too long: {message}")
        return LanternError(f"the engine at {self.url} answered HTTP {status}: {message}")

    def _read(
        self, stream: ChatStream, response: httpx.Response, settings: GenerationSettings, started: float
    ) -> Generator[str, None, None]:
        matcher = StopMatcher(settings.stop)
        text: list[str] = []
        finish: str | None = None
        usage: dict = {}
        pieces = 0
        first_at: float | None = None
        failed = False  # an error before any text: nothing to keep, so no result
        try:
            try:
                for line in response.iter_lines():
                    if stream.cancelled:
                        break
                    event = _parse_event(line, self.url)
                    if event is None:
                        continue
                    if event == "[DONE]":
                        finish = finish or "stop"
                        break
                    usage = event.get("usage") or usage
                    choice = (event.get("choices") or [{}])[0]
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        pieces += 1
                        first_at = first_at or time.perf_counter()
                        out, hit = matcher.feed(piece)
                        if out:
                            text.append(out)
                            yield out
                        if hit:
                            finish = "stop"
                            break
                    finish = choice.get("finish_reason") or finish
                cause = "the stream ended before the answer did"
            except httpx.TimeoutException:
                cause = f"nothing more for {self.config.timeout_s:g} s"
                if not text and not stream.cancelled:
                    failed = True
                    raise EngineUnavailableError(
                        f"the engine at {self.url} sent nothing for {self.config.timeout_s:g} s; "
                        "raise [remote] timeout_s in the config if it is just slow"
                    ) from None
            except (httpx.TransportError, httpx.StreamError) as exc:  # StreamError: closed under it
                cause = _describe(exc)
            except _EngineSaidError as exc:
                if not text:
                    failed = True
                    raise
                cause = str(exc)
            if stream.cancelled:
                finish = "cancelled"
            elif finish is None and not text:
                failed = True
                raise EngineUnavailableError(
                    f"the engine at {self.url} closed the answer before any text ({cause}); "
                    "see the engine's own log"
                )
            elif finish is None:
                finish = "cut"
            tail = matcher.flush()
            if tail and finish != "cancelled":
                text.append(tail)
                yield tail
            if finish == "cut":
                raise EngineCutError(
                    f"the engine at {self.url} broke off the answer ({cause}); "
                    "the partial answer is kept, marked as cut"
                )
        finally:
            _close_now(response)
            if not failed:
                ended = time.perf_counter()
                prompt_tokens = int(usage.get("prompt_tokens") or len(stream.plan.tokens))
                cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
                stream.result = ChatResult(
                    text="".join(text),
                    # None here: the reader went away (GeneratorExit) mid-answer
                    finish_reason=finish or "cancelled",
                    prompt_tokens=prompt_tokens,
                    prompt_tokens_evaluated=prompt_tokens - cached,
                    completion_tokens=int(usage.get("completion_tokens") or pieces),
                    dropped_messages=stream.plan.dropped_messages,
                    time_to_first_token_s=(first_at or ended) - started,
                    total_s=ended - started,
                )


class _EngineSaidError(LanternError):
    """The engine sent an error event (or something unreadable) in the stream."""


def _parse_event(line: str, url: str) -> dict | str | None:
    """One server-sent-events line: its JSON, "[DONE]", or None for blank lines, comments
    (sse-starlette's pings) and fields other than data."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return data
    try:
        event = json.loads(data)
    except ValueError:
        raise _EngineSaidError(f"the engine at {url} sent what is not JSON: {data[:80]!r}") from None
    if not isinstance(event, dict):
        return None
    if "error" in event:
        error = event["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise _EngineSaidError(f"the engine at {url} stopped with an error: {str(message)[:200]}")
    return event


def _wake_reader(response: httpx.Response) -> None:
    """End a read blocked on the response's socket, from any thread: shutting the socket down
    wakes it at once (closing it would not, on Linux), and the reader then closes the response."""
    network = response.extensions.get("network_stream")
    sock = network.get_extra_info("socket") if network is not None else None
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _close_now(response: httpx.Response) -> None:
    _wake_reader(response)
    try:
        response.close()
    except httpx.HTTPError:
        pass


def _error_message(response: httpx.Response) -> str:
    try:
        response.read()
        data = response.json()
        error = data.get("error", data.get("detail", data)) if isinstance(data, dict) else data
        message = error.get("message", error) if isinstance(error, dict) else error
        return str(message)[:200]
    except ValueError:
        return response.text[:200]
    except httpx.HTTPError:
        return ""
    finally:
        response.close()


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:120]


def _is_tls_failure(exc: Exception) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)
