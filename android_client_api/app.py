"""The HTTP API: OpenAI-compatible routes, Lantern's own under /v1/lantern/, and the web client."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from android_client_api.limits import BodySizeLimit, SameOriginOnly
from android_client_api.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    FeedbackRequest,
    MemorySearchRequest,
    NoteRequest,
)
from android_client_api.service import LanternService
from app.batching import BatchedStream, QueueFullError
from app.chat_template import ChatMessage
from app.context_budget import PromptPlan
from app.engine import GenerationSettings
from app.errors import ContextOverflowError, LanternError
from app.memory import cite

STATIC = Path(__file__).parent / "static"


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _error(status: int, message: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    body = {"error": {"message": message, "type": kind, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(service: LanternService) -> FastAPI:
    settings = service.settings
    api = FastAPI(title="Lantern", version="1", description="Lantern's OpenAI-compatible API, offline.")

    @api.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _error(exc.status, exc.message, exc.code, exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg')}")
        return _error(422, "invalid request: " + "; ".join(problems), "invalid_request")

    @api.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    def require_device(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401, "missing bearer token; pair this device with 'lantern pair NAME'", "missing_token"
            )
        device = service.devices.verify(token.strip())
        if device is None:
            raise ApiError(
                401, "the token is wrong or was revoked; pair again with 'lantern pair NAME'", "bad_token"
            )
        return device.name

    authorized = [Depends(require_device)]

    # --- OpenAI-compatible ---------------------------------------------------------------

    @api.get("/v1/models", dependencies=authorized)
    async def models():
        created = int(time.time())
        names = [service.model_name, "all-MiniLM-L6-v2"]
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": created, "owned_by": "lantern"} for n in names],
        }

    def _check_model(model: str | None) -> None:
        if model is not None and model != service.model_name:
            raise ApiError(
                404, f"no model {model!r} is served here; use {service.model_name!r}", "model_not_found"
            )

    def _settings(body, max_tokens: int | None) -> GenerationSettings:
        defaults = service.assistant.config.generation
        return GenerationSettings(
            max_tokens=max_tokens or defaults.max_tokens,
            temperature=defaults.temperature if body.temperature is None else body.temperature,
            top_p=defaults.top_p if body.top_p is None else body.top_p,
            seed=body.seed,
            stop=body.stops(),
        )

    def _submit(plan: PromptPlan, settings: GenerationSettings) -> BatchedStream:
        try:
            return service.scheduler.submit(plan, settings)
        except QueueFullError as exc:
            raise ApiError(503, f"{exc}; retry shortly", "overloaded", {"Retry-After": "2"}) from None

    async def _plan(make_plan) -> PromptPlan:
        # Tokenizing and trimming a long chat takes a while: never on the event loop.
        try:
            return await asyncio.to_thread(make_plan)
        except ContextOverflowError as exc:
            raise ApiError(400, str(exc), "context_length_exceeded") from None
        except (LanternError, ValueError, jinja2.TemplateError) as exc:
            raise ApiError(
                400, f"cannot build a prompt from these messages: {exc}", "invalid_prompt"
            ) from None

    async def _collect(stream: BatchedStream, request: Request) -> str:
        """The whole answer, or a cancelled one if the client goes away before it is done."""

        async def watch() -> None:
            while not await request.is_disconnected():
                await asyncio.sleep(0.25)
            stream.cancel()

        watcher = asyncio.create_task(watch())
        try:
            return "".join([piece async for piece in stream])
        finally:
            watcher.cancel()
            stream.cancel()

    def _check_size(text_chars: int) -> None:
        if text_chars > settings.max_prompt_chars:
            raise ApiError(
                400,
                f"the prompt is {text_chars} characters; the limit is {settings.max_prompt_chars}",
                "prompt_too_long",
            )

    @api.post("/v1/chat/completions", dependencies=authorized)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        _check_model(body.model)
        try:
            messages = [ChatMessage(m.role, m.text()) for m in body.messages]
        except ValueError as exc:
            raise ApiError(422, str(exc), "invalid_request") from None
        _check_size(sum(len(m.content) for m in messages))
        system_prompt = service.assistant.config.system_prompt
        if messages[0].role != "system" and system_prompt and not body.lantern.conversation_id:
            # Small local models answer far better with their usual system prompt; a client that
            # sends its own system message replaces it.
            messages = [ChatMessage("system", system_prompt), *messages]
        conversation = None
        if body.lantern.conversation_id:
            try:
                conversation = service.assistant.conversations.get(body.lantern.conversation_id)
            except LanternError as exc:
                raise ApiError(404, str(exc), "conversation_not_found") from None
            if messages[-1].role != "user":
                raise ApiError(422, "the last message must be the user's when continuing a conversation")
            messages = [*conversation.chat_messages(), messages[-1]]
        question = messages[-1].content
        citations = []
        if body.lantern.memory and messages[-1].role == "user":
            engine = service.scheduler.engine
            context = service.assistant.memory.context_for(question, engine.count_tokens)
            if context is not None:
                messages[-1] = ChatMessage("user", context.prompt)
                citations = [
                    {
                        "source": h.source,
                        "heading": h.heading,
                        "text": h.text,
                        "score": h.score,
                        "cite": cite(h),
                    }
                    for h in context.hits
                ]
        settings_ = _settings(body, body.max_completion_tokens or body.max_tokens)
        plan = await _plan(lambda: service.scheduler.plan_chat(messages, settings_.max_tokens))
        stream = _submit(plan, settings_)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def save(text: str) -> str | None:
            store = service.assistant.conversations
            target = conversation or (
                store.create(service.model_name, "", question)
                if body.lantern.conversation_id is None
                else None
            )
            if target is None:
                return None
            store.add_exchange(target.id, question, text)
            return target.id

        def usage() -> dict:
            r = stream.result
            return {
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "total_tokens": r.prompt_tokens + r.completion_tokens,
            }

        if not body.stream:
            text = await _collect(stream, request)
            conversation_id = save(text) if body.lantern.conversation_id or body.lantern.memory else None
            return {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": service.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": _finish(stream.result.finish_reason),
                    }
                ],
                "usage": usage(),
                "lantern": {"citations": citations, "conversation_id": conversation_id},
            }

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": service.model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        async def events() -> AsyncIterator[str]:
            try:
                yield chunk({"role": "assistant", "content": ""})
                pieces = []
                async for piece in stream:
                    pieces.append(piece)
                    yield chunk({"content": piece})
                conversation_id = (
                    save("".join(pieces)) if body.lantern.conversation_id or body.lantern.memory else None
                )
                yield chunk(
                    {},
                    _finish(stream.result.finish_reason),
                    usage=usage(),
                    lantern={"citations": citations, "conversation_id": conversation_id},
                )
                yield "data: [DONE]\n\n"
            finally:
                stream.cancel()  # a client that went away frees its slot at once

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @api.post("/v1/completions", dependencies=authorized)
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body.model)
        try:
            prompt = body.text()
        except ValueError as exc:
            raise ApiError(422, str(exc), "invalid_request") from None
        _check_size(len(prompt))
        settings_ = _settings(body, body.max_tokens or 16)
        plan = await _plan(lambda: service.scheduler.plan_text(prompt, settings_.max_tokens))
        stream = _submit(plan, settings_)
        completion_id, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def body_of(text: str, finish: str | None) -> dict:
            return {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": service.model_name,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            }

        if not body.stream:
            text = await _collect(stream, request)
            r = stream.result
            return {
                **body_of(text, _finish(r.finish_reason)),
                "usage": {
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                    "total_tokens": r.prompt_tokens + r.completion_tokens,
                },
            }

        async def events() -> AsyncIterator[str]:
            try:
                async for piece in stream:
                    yield f"data: {json.dumps(body_of(piece, None))}\n\n"
                yield f"data: {json.dumps(body_of('', _finish(stream.result.finish_reason)))}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                stream.cancel()

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.post("/v1/embeddings", dependencies=authorized)
    async def embeddings(body: EmbeddingRequest):
        if body.model is not None and body.model != "all-MiniLM-L6-v2":
            raise ApiError(
                404, f"no embedding model {body.model!r}; use 'all-MiniLM-L6-v2'", "model_not_found"
            )
        texts = [body.input] if isinstance(body.input, str) else body.input
        if len(texts) > 256:
            raise ApiError(400, "at most 256 inputs per request", "too_many_inputs")
        _check_size(sum(len(t) for t in texts))
        import asyncio

        vectors = await asyncio.to_thread(service.assistant.memory.embedder.embed, texts)
        tokens = sum(len(t.split()) for t in texts)
        return {
            "object": "list",
            "model": "all-MiniLM-L6-v2",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
                for i, v in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    # --- Lantern's own -------------------------------------------------------------------

    @api.get("/v1/lantern/health")
    async def health():
        scheduler = service.scheduler
        return {
            "status": "ok",
            "model": service.model_name,
            "slots": scheduler.slots,
            "busy_slots": scheduler.busy_slots,
            "waiting": scheduler.waiting,
        }

    @api.post("/v1/lantern/memory/search", dependencies=authorized)
    async def memory_search(body: MemorySearchRequest):
        import asyncio

        hits = await asyncio.to_thread(service.assistant.memory.search, body.query, body.k)
        return {
            "hits": [
                {"source": h.source, "heading": h.heading, "text": h.text, "score": h.score} for h in hits
            ]
        }

    @api.post("/v1/lantern/notes", dependencies=authorized, status_code=201)
    async def add_note(body: NoteRequest):
        import asyncio

        chunks = await asyncio.to_thread(service.assistant.memory.add_note, body.title, body.text)
        return {"title": body.title, "chunks": chunks}

    @api.get("/v1/lantern/conversations", dependencies=authorized)
    async def conversations(limit: int = 50):
        rows = service.assistant.conversations.list(max(1, min(limit, 200)))
        return {
            "conversations": [
                {"id": c.id, "title": c.title, "model": c.model, "updated_at": c.updated_at, "messages": n}
                for c, n in rows
            ]
        }

    @api.get("/v1/lantern/conversations/{conversation_id}", dependencies=authorized)
    async def conversation(conversation_id: str):
        try:
            c = service.assistant.conversations.get(conversation_id)
        except LanternError as exc:
            raise ApiError(404, str(exc), "conversation_not_found") from None
        return {
            "id": c.id,
            "title": c.title,
            "model": c.model,
            "system_prompt": c.system_prompt,
            "messages": [
                {"id": m.id, "role": m.role, "content": m.content, "created_at": m.created_at}
                for m in c.messages
            ],
        }

    @api.post("/v1/lantern/feedback", dependencies=authorized, status_code=201)
    async def feedback(body: FeedbackRequest):
        """Rate an answer (or give a better one): the pairs `lantern twin tune-prefs` learns from."""
        try:
            pair = service.assistant.conversations.add_feedback(
                body.conversation_id, body.message_id, body.rating, body.edited
            )
        except LanternError as exc:
            raise ApiError(404, str(exc), "answer_not_found") from None
        return {"conversation_id": pair.conversation_id, "message_id": pair.message_id, "rating": pair.rating}

    # --- the web client ------------------------------------------------------------------

    if STATIC.is_dir():
        api.mount("/static", StaticFiles(directory=STATIC), name="static")

        @api.get("/", include_in_schema=False)
        async def index():
            return FileResponse(STATIC / "index.html")

        @api.get("/sw.js", include_in_schema=False)
        async def service_worker():
            # Served from the root so it may control the whole app (a PWA's offline shell).
            return FileResponse(STATIC / "sw.js", media_type="application/javascript")

    # Outermost last: the host check runs before anything else, then the body limit.
    if settings.cors_origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    api.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    api.add_middleware(SameOriginOnly, allowed_origins=settings.cors_origins)
    api.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    return api


def _finish(reason: str) -> str:
    return {"stop": "stop", "length": "length", "cancelled": "stop", "error": "stop"}.get(reason, "stop")


def _encode_vector(vector, encoding: str):
    if encoding == "base64":
        import base64

        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
