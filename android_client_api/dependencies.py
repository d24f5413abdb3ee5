"""What routes ask FastAPI for: the service create_app put on app.state, its settings, a paired device."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from android_client_api.errors import ApiError
from android_client_api.service import LanternService
from android_client_api.settings import ServerSettings


# The lookups are async so FastAPI runs them inline, not each in a worker thread.
async def get_service(request: Request) -> LanternService:
    return request.app.state.service


Service = Annotated[LanternService, Depends(get_service)]


async def get_settings(service: Service) -> ServerSettings:
    return service.settings


Settings = Annotated[ServerSettings, Depends(get_settings)]


def require_device(request: Request, service: Service) -> str:
    """The paired device's name, or 401 for a missing, wrong or revoked bearer token."""
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
