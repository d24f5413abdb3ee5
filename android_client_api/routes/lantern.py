"""Lantern's own routes under /v1/lantern/: health, memory, notes, conversations and feedback."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from android_client_api.dependencies import Service, authorized
from android_client_api.errors import ApiError
from android_client_api.schemas import FeedbackRequest, MemorySearchRequest, NoteRequest
from app.errors import LanternError

router = APIRouter()


@router.get("/v1/lantern/health")
async def health(service: Service):
    scheduler = service.scheduler
    return {
        "status": "ok",
        "model": service.model_name,
        "slots": scheduler.slots,
        "busy_slots": scheduler.busy_slots,
        "waiting": scheduler.waiting,
    }


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
async def conversations(service: Service, limit: int = 50):
    rows = service.assistant.conversations.list(max(1, min(limit, 200)))
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
            {"id": m.id, "role": m.role, "content": m.content, "created_at": m.created_at} for m in c.messages
        ],
    }


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
