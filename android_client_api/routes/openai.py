"""OpenAI-compatible routes: models, chat and text completions (whole or streamed), embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from android_client_api.dependencies import Service, Settings, authorized
from android_client_api.errors import ApiError
from android_client_api.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from android_client_api.service import LanternService, ModelBusyError
from android_client_api.settings import ServerSettings
from app.batching import BatchedStream, BatchScheduler, QueueFullError
from app.chat_template import ChatMessage
from app.context_budget import PromptPlan
from app.conversations import Conversation, new_conversation_id
from app.engine import GenerationSettings
from app.errors import ContextOverflowError, LanternError
from app.memory import citation_record
from app.remote_engine import EngineUnavailableError
from app.remote_scheduler import RemoteScheduler

EMBEDDING_MODEL = "all-MiniLM-L6-v2"

router = APIRouter(dependencies=authorized)


@router.get("/v1/models")
async def models(service: Service):
    created = int(time.time())
    names = [m.id for m in service.model_choices()] + [EMBEDDING_MODEL]
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": created, "owned_by": "lantern"} for n in names],
    }


@router.post("/v1/chat/completions")
async def chat_completions(
    body: ChatCompletionRequest, request: Request, service: Service, settings: Settings
):
    try:
        messages = [ChatMessage(m.role, m.text()) for m in body.messages]
    except ValueError as exc:
        raise ApiError(422, str(exc), "invalid_request") from None
    _check_size(settings, sum(len(m.content) for m in messages))
    options = body.lantern
    system_prompt = service.assistant.config.system_prompt
    if messages[0].role != "system" and system_prompt and not options.conversation_id:
        # Small local models answer far better with their usual system prompt; a client that
        # sends its own system message replaces it.
        messages = [ChatMessage("system", system_prompt), *messages]
    conversation = None
    if options.regenerate and not options.conversation_id:
        raise ApiError(422, "regenerate needs the conversation_id of the answer to replace")
    if options.conversation_id:
        try:
            conversation = service.assistant.conversations.get(options.conversation_id)
        except LanternError as exc:
            raise ApiError(404, str(exc), "conversation_not_found") from None
        if messages[-1].role != "user":
            raise ApiError(422, "the last message must be the user's when continuing a conversation")
        history = conversation.chat_messages()
        if options.regenerate:
            if [m.role for m in conversation.messages[-2:]] != ["user", "assistant"]:
                raise ApiError(422, "this conversation has no answer to regenerate", "nothing_to_regenerate")
            history = history[:-2]
        messages = [*history, messages[-1]]
    model = _model_for(service, body.model, conversation)
    scheduler = await _scheduler(service, model)
    question = messages[-1].content
    citations = []
    if options.memory and messages[-1].role == "user":
        count_tokens = scheduler.engine.count_tokens
        context = await asyncio.to_thread(service.assistant.memory.context_for, question, count_tokens)
        if context is not None:
            messages[-1] = ChatMessage("user", context.prompt)
            citations = [citation_record(h) for h in context.hits]
    generation = _generation_settings(service, body, body.max_completion_tokens or body.max_tokens)
    plan = await _plan(lambda: scheduler.plan_chat(messages, generation.max_tokens))
    stream = _submit(scheduler, plan, generation)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    keep = options.conversation_id is not None or options.memory or options.save
    system_used = messages[0].content if messages[0].role == "system" else ""
    # Known before the first token, so a client that stops the answer still knows where it went.
    conversation_id = conversation.id if conversation else new_conversation_id() if keep else None

    def save(text: str) -> dict:
        """The exchange into the conversation store; the ids a client needs for feedback."""
        if not keep:
            return {"conversation_id": None, "message_id": None}
        result = stream.result
        target, message_id = service.assistant.conversations.record_exchange(
            conversation,
            model,
            system_used,
            question,
            text,
            conversation_id=conversation_id,
            prompt_tokens=result.prompt_tokens if result else None,
            completion_tokens=result.completion_tokens if result else None,
            citations=citations,
            replace_last=options.regenerate,
            finish=result.finish_reason if result else None,
        )
        return {"conversation_id": target.id, "message_id": message_id}

    if not body.stream:
        text = await _collect(stream, request)
        if stream.result is None:
            return _gone()  # the client left while its request waited: nothing was answered or saved
        saved = save(text)
        if stream.result.finish_reason == "cut":
            saved["cut"] = True
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": _finish(stream.result.finish_reason),
                }
            ],
            "usage": _usage(stream),
            "lantern": {"citations": citations, "model": model, **saved},
        }

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        data = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def events() -> AsyncIterator[str]:
        pieces: list[str] = []
        saved = None
        try:
            yield chunk(
                {"role": "assistant", "content": ""},
                lantern={"conversation_id": conversation_id, "model": model},
            )
            try:
                async for piece in stream:
                    pieces.append(piece)
                    yield chunk({"content": piece})
            except LanternError as exc:  # the engine failed after the answer began: say so, in band
                yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'engine_error'}})}\n\n"
                return
            saved = save("".join(pieces))
            cut = {"cut": True} if stream.result.finish_reason == "cut" else {}
            yield chunk(
                {},
                _finish(stream.result.finish_reason),
                usage=_usage(stream),
                lantern={"citations": citations, "model": model, **saved, **cut},
            )
            yield "data: [DONE]\n\n"
        finally:
            stream.cancel()  # a client that went away frees its slot at once
            if saved is None and pieces:
                save("".join(pieces))  # stopped half way: keep what was said, as the terminal does

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, service: Service, settings: Settings):
    model = _model_for(service, body.model, None)
    scheduler = await _scheduler(service, model)
    try:
        prompt = body.text()
    except ValueError as exc:
        raise ApiError(422, str(exc), "invalid_request") from None
    _check_size(settings, len(prompt))
    generation = _generation_settings(service, body, body.max_tokens or 16)
    plan = await _plan(lambda: scheduler.plan_text(prompt, generation.max_tokens))
    stream = _submit(scheduler, plan, generation)
    completion_id, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def body_of(text: str, finish: str | None) -> dict:
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        }

    if not body.stream:
        text = await _collect(stream, request)
        if stream.result is None:
            return _gone()
        return {**body_of(text, _finish(stream.result.finish_reason)), "usage": _usage(stream)}

    async def events() -> AsyncIterator[str]:
        try:
            async for piece in stream:
                yield f"data: {json.dumps(body_of(piece, None))}\n\n"
            yield f"data: {json.dumps(body_of('', _finish(stream.result.finish_reason)))}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            stream.cancel()

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, service: Service, settings: Settings):
    if body.model is not None and body.model != EMBEDDING_MODEL:
        raise ApiError(404, f"no embedding model {body.model!r}; use {EMBEDDING_MODEL!r}", "model_not_found")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if len(texts) > 256:
        raise ApiError(400, "at most 256 inputs per request", "too_many_inputs")
    _check_size(settings, sum(len(t) for t in texts))
    vectors = await asyncio.to_thread(service.assistant.memory.embedder.embed, texts)
    tokens = sum(len(t.split()) for t in texts)
    return {
        "object": "list",
        "model": EMBEDDING_MODEL,
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _model_for(service: LanternService, requested: str | None, conversation: Conversation | None) -> str:
    """The model asked for, else the one the conversation was having, else the served default."""
    choices = {m.id for m in service.model_choices()}
    if requested is not None:
        if requested not in choices:
            known = ", ".join(sorted(choices))
            raise ApiError(404, f"no model {requested!r} here; choose one of: {known}", "model_not_found")
        return requested
    if conversation is not None and conversation.model in choices:
        return conversation.model
    return service.model_name


async def _scheduler(service: LanternService, model: str) -> BatchScheduler | RemoteScheduler:
    try:
        return await asyncio.to_thread(service.scheduler_for, model)
    except ModelBusyError as exc:
        raise ApiError(503, str(exc), "model_busy", {"Retry-After": "5"}) from None
    except EngineUnavailableError as exc:  # a remote engine that does not answer: not the phone's fault
        raise ApiError(502, str(exc), "engine_unavailable") from None
    except LanternError as exc:
        raise ApiError(400, f"model {model!r} cannot be loaded: {exc}", "model_not_loadable") from None


def _check_size(settings: ServerSettings, text_chars: int) -> None:
    if text_chars > settings.max_prompt_chars:
        raise ApiError(
            400,
            f"the prompt is {text_chars} characters; the limit is {settings.max_prompt_chars}",
            "prompt_too_long",
        )


def _generation_settings(service: LanternService, body, max_tokens: int | None) -> GenerationSettings:
    defaults = service.assistant.config.generation
    return GenerationSettings(
        max_tokens=max_tokens or defaults.max_tokens,
        temperature=defaults.temperature if body.temperature is None else body.temperature,
        top_p=defaults.top_p if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=body.stops(),
        speculative=service.settings.speculative or service.assistant.config.runtime.speculative,
        repetition_guard=defaults.repetition_guard,
        dry_multiplier=defaults.dry_multiplier,
        repeat_penalty=defaults.repeat_penalty,
    )


async def _plan(make_plan) -> PromptPlan:
    # Tokenizing and trimming a long chat takes a while: never on the event loop.
    try:
        return await asyncio.to_thread(make_plan)
    except ContextOverflowError as exc:
        raise ApiError(400, str(exc), "context_length_exceeded") from None
    except (LanternError, ValueError, jinja2.TemplateError) as exc:
        raise ApiError(400, f"cannot build a prompt from these messages: {exc}", "invalid_prompt") from None


def _submit(
    scheduler: BatchScheduler | RemoteScheduler, plan: PromptPlan, settings: GenerationSettings
) -> BatchedStream:
    try:
        return scheduler.submit(plan, settings)
    except QueueFullError as exc:
        raise ApiError(503, f"{exc}; retry shortly", "overloaded", {"Retry-After": "2"}) from None
    except LanternError as exc:  # a model being unloaded to make room for another
        raise ApiError(503, f"{exc}; retry shortly", "model_busy", {"Retry-After": "2"}) from None


# A client that gave up while its request waited in the queue: no answer began, so there is none
# to return or store; 499 is nginx's "client closed request", logged by no one since no one reads it.
def _gone() -> Response:
    return Response(status_code=499)


async def _collect(stream: BatchedStream, request: Request) -> str:
    """The whole answer, or a cancelled one if the client goes away before it is done. An engine
    that fails (a remote one down, or cut off before its first word) is a 502 naming it."""

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)
        stream.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return "".join([piece async for piece in stream])
    except LanternError as exc:
        raise ApiError(502, str(exc), "engine_error") from None
    finally:
        watcher.cancel()
        stream.cancel()


def _usage(stream: BatchedStream) -> dict:
    r = stream.result
    return {
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "total_tokens": r.prompt_tokens + r.completion_tokens,
        # OpenAI's field for prompt tokens served from a cache: here the KV cells or a saved state.
        "prompt_tokens_details": {"cached_tokens": r.prompt_tokens - r.prompt_tokens_evaluated},
        "completion_tokens_details": {
            "accepted_prediction_tokens": r.accepted_draft_tokens,
            "rejected_prediction_tokens": r.draft_tokens - r.accepted_draft_tokens,
        },
    }


def _finish(reason: str) -> str:
    return {"stop": "stop", "length": "length", "cancelled": "stop", "error": "stop"}.get(reason, "stop")


def _encode_vector(vector, encoding: str):
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
