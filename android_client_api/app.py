"""The HTTP API: OpenAI-compatible routes, Lantern's own under /v1/lantern/, and the web client."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from android_client_api.errors import ApiError, api_error, http_error, invalid_request
from android_client_api.limits import BodySizeLimit, SameOriginOnly
from android_client_api.routes import lantern, openai, web_client
from android_client_api.service import LanternService


def create_app(service: LanternService) -> FastAPI:
    """The app serving `service`; routes reach it through android_client_api.dependencies."""
    settings = service.settings
    api = FastAPI(title="Lantern", version="1", description="Lantern's OpenAI-compatible API, offline.")
    api.state.service = service
    api.add_exception_handler(ApiError, api_error)
    api.add_exception_handler(RequestValidationError, invalid_request)
    api.add_exception_handler(StarletteHTTPException, http_error)

    api.include_router(openai.router)
    api.include_router(lantern.router)
    if web_client.STATIC.is_dir():
        api.mount("/static", StaticFiles(directory=web_client.STATIC), name="static")
        api.include_router(web_client.router)

    # Outermost last: the host check runs before anything else, then the body limit.
    if settings.cors_origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    api.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    api.add_middleware(SameOriginOnly, allowed_origins=settings.cors_origins)
    api.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    return api
