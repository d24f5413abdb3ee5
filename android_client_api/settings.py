"""How `lantern serve` runs: address, limits, and who may call it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

DEFAULT_PORT = 8484


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Host headers accepted (against DNS rebinding): loopback names plus any the user adds.
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")
    cors_origins: tuple[str, ...] = ()  # closed unless configured
    max_body_bytes: int = 1_000_000
    max_prompt_chars: int = 200_000
    slots: int = 4  # answers decoded together
    slot_context: int = 2048
    max_waiting: int = 16  # requests queued beyond the slots before 503
    max_loaded_models: int = 2  # models and twins kept loaded at once; an idle one makes room
    speculative: str | None = None  # None: the config's runtime.speculative
    reuse_prefix: bool = True  # False: every prompt evaluated whole (benchmarks, comparisons)
    extra: dict = field(default_factory=dict)

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
