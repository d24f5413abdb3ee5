"""A fake OpenAI-compatible engine on loopback, for the failures a real engine cannot be made to
show on demand: down, busy, slow, stalled, cut half way (the tests name it as a fake)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.api_server import free_port


class FakeMisbehavingEngine:
    """A fake OpenAI-compatible engine on loopback whose chat route fails as told by ``mode``:
    "ok" (three pieces, then done), "cut" (three pieces, then the connection drops), "slow"
    (nothing for ``delay`` s), "stall" (one piece, then nothing for ``delay`` s), "busy" (HTTP 503).
    It records each chat request's Authorization header."""

    PIECES = ("The lighthouse ", "keeper's name ", "was ")

    def __init__(
        self,
        mode: str = "ok",
        delay: float = 3.0,
        key: str | None = None,
        tls: tuple[Path, Path] | None = None,
    ):
        """``tls``: (certificate, key) files to serve https with."""
        self.mode, self.delay, self.key = mode, delay, key
        self.chat_requests = 0
        self.authorizations: list[str | None] = []
        app = Starlette(
            routes=[
                Route("/v1/models", self._models),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        certificate, key_file = tls or (None, None)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="critical",
            ssl_certfile=certificate,
            ssl_keyfile=key_file,
        )
        config.timeout_graceful_shutdown = 1
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def _refused(self, request: Request) -> Response | None:
        if self.key is not None and request.headers.get("authorization") != f"Bearer {self.key}":
            return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
        return None

    async def _models(self, request: Request) -> Response:
        return self._refused(request) or JSONResponse({"data": [{"id": "fake-7b", "context_length": 1024}]})

    async def _chat(self, request: Request) -> Response:
        self.chat_requests += 1
        self.authorizations.append(request.headers.get("authorization"))
        refused = self._refused(request)
        if refused is not None:
            return refused
        if self.mode == "busy":
            return JSONResponse({"error": "loading"}, status_code=503)
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        return StreamingResponse(self._events(), media_type="text/event-stream")

    async def _events(self):
        for n, piece in enumerate(self.PIECES):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            if self.mode == "stall" and n == 0:
                await asyncio.sleep(self.delay)
        if self.mode == "cut":
            raise ConnectionResetError("the fake drops the connection half way")
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}}
        yield f"data: {json.dumps(end)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
