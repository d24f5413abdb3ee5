"""Request body limit as ASGI middleware: 413 before the app reads more than it allows."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException


class BodySizeLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI turns other errors while reading a body into 400; this one it passes on.
                    raise HTTPException(413, f"the request body is over the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)

    async def _reject(self, send) -> None:
        body = json.dumps(
            {
                "error": {
                    "message": f"the request body is over the limit of {self.max_bytes} bytes",
                    "type": "invalid_request_error",
                    "code": "request_too_large",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class SameOriginOnly:
    """Refuse (403) browser requests from other sites: an Origin header must match the Host the
    request came to, or be one the user allowed for CORS. Non-browser clients send no Origin."""

    def __init__(self, app, allowed_origins: tuple[str, ...] = ()):
        self.app = app
        self.allowed = {o.rstrip("/") for o in allowed_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers", []))
            origin = headers.get(b"origin", b"").decode("latin-1").rstrip("/")
            host = headers.get(b"host", b"").decode("latin-1")
            if (
                origin
                and origin != "null"
                and origin not in self.allowed
                and origin.split("://", 1)[-1] != host
            ):
                body = json.dumps(
                    {
                        "error": {
                            "message": f"requests from {origin} are not allowed",
                            "type": "invalid_request_error",
                            "code": "bad_origin",
                        }
                    }
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
