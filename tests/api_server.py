"""A real `lantern serve` for tests: the real model behind uvicorn on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import httpx
import uvicorn

from android_client_api.app import create_app
from android_client_api.service import LanternService
from android_client_api.settings import ServerSettings
from app.assistant import Assistant


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    token: str
    service: LanternService
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.service.close()
        self.service.assistant.close()


def start_server(port: int | None = None, **settings) -> RunningServer:
    """``port``: a given one (to start again where a stopped server was), else a free one."""
    assistant = Assistant()
    port = port or free_port()
    service = LanternService.start(assistant, ServerSettings(port=port, **settings))
    token = service.devices.pair("test-phone")
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/v1/lantern/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    return RunningServer(url, token, service, server, thread)
