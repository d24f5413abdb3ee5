"""Lantern's own routes under /v1/lantern/: health, memory, notes, conversations and feedback."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import APIRouter

from android_client_api.dependencies import Service, authorized
from android_client_api.errors import ApiError
from android_client_api.schemas import FeedbackRequest, MemorySearchRequest, NoteRequest, RenameRequest
from app.errors import LanternError

router = APIRouter()


@router.get("/v1/lantern/health")
async def health(service: Service):
    loaded = service.loaded
    return {
        "status": "ok",
        "model": service.model_name,
        "loaded_models": sorted(loaded),
        "slots": service.settings.slots,
        "busy_slots": sum(s.busy_slots for s in loaded.values()),
        "waiting": sum(s.waiting for s in loaded.values()),
    }


@router.get("/v1/lantern/models", dependencies=authorized)
async def models(service: Service):
    """What a conversation may answer with: the store's models and the trained twins."""
    choices = await asyncio.to_thread(service.model_choices)
    return {"default": service.model_name, "models": [asdict(m) for m in choices]}


@router.post("/v1/lantern/memory/search", dependencies=authorized)
async def memory_search(body: MemorySearchRequest, service: Service):
    hits = await asyncio.to_thread(service.assistant.memory.search, body.query, body.k)
    return {
        "hits": [{"source": h.source, "heading": h.heading, "text": h.text, "score": h.score} for h in hits]
    }


@router.post("/v1/lantern/notes", dependencies=authorized, status_code=201)
async def add_note(body: NoteRequest, service: Service):
    chunks = await asyncio.to_thread(service.assistant.memory.add_note, body.title, body.text)
    return {"title": body.title, "chunks": chunks}


@router.get("/v1/lantern/conversations", dependencies=authorized)
async def conversations(service: Service, limit: int = 50, q: str = ""):
    """Newest first; ``q`` keeps those whose title or any message contains it."""
    store, limit = service.assistant.conversations, max(1, min(limit, 200))
    rows = store.search(q[:200], limit) if q.strip() else store.list(limit)
    return {
        "conversations": [
            {"id": c.id, "title": c.title, "model": c.model, "updated_at": c.updated_at, "messages": n}
            for c, n in rows
        ]
    }


@router.get("/v1/lantern/conversations/{conversation_id}", dependencies=authorized)
async def conversation(conversation_id: str, service: Service):
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
            {
                "id": m.id,
                "role": m.role,
                "content": m.content,
                "created_at": m.created_at,
                "model": m.model,
                "citations": m.citations,
                "cut": m.is_cut,  # a remote engine broke off: the answer is partial
            }
            for m in c.messages
        ],
    }


@router.patch("/v1/lantern/conversations/{conversation_id}", dependencies=authorized)
async def rename_conversation(conversation_id: str, body: RenameRequest, service: Service):
    store = service.assistant.conversations
    if not body.title.strip():
        raise ApiError(422, "a conversation title cannot be empty", "invalid_title")
    try:
        store.rename(conversation_id, body.title)
    except LanternError as exc:
        raise ApiError(404, str(exc), "conversation_not_found") from None
    return {"id": conversation_id, "title": store.get(conversation_id).title}


@router.delete("/v1/lantern/conversations/{conversation_id}", dependencies=authorized, status_code=204)
async def delete_conversation(conversation_id: str, service: Service):
    try:
        service.assistant.conversations.delete(conversation_id)
    except LanternError as exc:
        raise ApiError(404, str(exc), "conversation_not_found") from None


@router.post("/v1/lantern/feedback", dependencies=authorized, status_code=201)
async def feedback(body: FeedbackRequest, service: Service):
    """Rate an answer (or give a better one): the pairs `lantern twin tune-prefs` learns from."""
    try:
        pair = service.assistant.conversations.add_feedback(
            body.conversation_id, body.message_id, body.rating, body.edited
        )
    except LanternError as exc:
        raise ApiError(404, str(exc), "answer_not_found") from None
    return {"conversation_id": pair.conversation_id, "message_id": pair.message_id, "rating": pair.rating}
