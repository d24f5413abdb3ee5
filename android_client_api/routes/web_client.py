"""The web client: its page and service worker at the root; create_app mounts STATIC at /static."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).parents[1] / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index():
    return FileResponse(STATIC / "index.html")


@router.get("/sw.js", include_in_schema=False)
async def service_worker():
    # Served from the root so it may control the whole app (a PWA's offline shell).
    return FileResponse(STATIC / "sw.js", media_type="application/javascript")
