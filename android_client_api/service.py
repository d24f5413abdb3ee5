"""What the HTTP routes work with: the assistant, the batch scheduler, paired devices, settings."""

from __future__ import annotations

from dataclasses import dataclass

from android_client_api.settings import ServerSettings
from app.assistant import Assistant
from app.batching import BatchScheduler
from app.devices import DeviceRegistry


@dataclass
class LanternService:
    assistant: Assistant
    scheduler: BatchScheduler
    devices: DeviceRegistry
    settings: ServerSettings
    model_name: str

    @classmethod
    def start(
        cls, assistant: Assistant, settings: ServerSettings, model: str | None = None
    ) -> LanternService:
        name = model or assistant.config.default_model
        engine = assistant.engine(name)
        scheduler = BatchScheduler(
            engine,
            slots=settings.slots,
            slot_context=settings.slot_context,
            max_waiting=settings.max_waiting,
            state_cache=assistant.state_cache(engine, streams=settings.slots),
            token_gap_ms=assistant.config.runtime.token_gap_ms,
            reuse_prefix=settings.reuse_prefix,
        )
        return cls(assistant, scheduler, device_registry(assistant), settings, name)

    def close(self) -> None:
        self.scheduler.close()


def device_registry(assistant: Assistant) -> DeviceRegistry:
    return DeviceRegistry(assistant.home.root / "devices.json")
