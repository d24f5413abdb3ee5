"""What the HTTP routes work with: the assistant, a batch scheduler per loaded model, paired devices."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from android_client_api.settings import ServerSettings
from app.assistant import Assistant
from app.batching import BatchScheduler
from app.devices import DeviceRegistry
from app.errors import LanternError
from app.remote_engine import RemoteEngine
from app.remote_scheduler import RemoteScheduler


@dataclass(frozen=True)
class ModelChoice:
    """A model a client may ask for: one in the store, or a twin (its base with an adapter)."""

    id: str
    kind: str  # "model", "remote" (served by another engine) or "twin"
    base: str | None = None  # a twin's base model


class ModelBusyError(LanternError):
    """Every loaded model is answering someone, so no other can be loaded now."""


@dataclass
class LanternService:
    assistant: Assistant
    devices: DeviceRegistry
    settings: ServerSettings
    model_name: str  # the default: what `serve --model` (or the config) named
    _schedulers: dict[str, BatchScheduler | RemoteScheduler] = field(default_factory=dict)
    _last_used: dict[str, float] = field(default_factory=dict)
    _loading: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(
        cls, assistant: Assistant, settings: ServerSettings, model: str | None = None
    ) -> LanternService:
        service = cls(
            assistant, device_registry(assistant), settings, model or assistant.config.default_model
        )
        service.scheduler_for(service.model_name)  # a bad default fails at start, not on the first request
        return service

    @property
    def scheduler(self) -> BatchScheduler:
        """The default model's scheduler."""
        return self.scheduler_for(self.model_name)

    @property
    def loaded(self) -> dict[str, BatchScheduler]:
        return dict(self._schedulers)

    def model_choices(self) -> list[ModelChoice]:
        models = [ModelChoice(e.name, "model") for e in self.assistant.models.list()]
        models += [ModelChoice(r.name, "remote") for r in self.assistant.models.list_remote()]
        if self.model_name not in {m.id for m in models}:  # served from a file path
            models.insert(0, ModelChoice(self.model_name, "model"))
        twins = [ModelChoice(t.name, "twin", t.base_model) for t in self.assistant.twins.list() if t.trained]
        return models + twins

    def scheduler_for(self, model: str) -> BatchScheduler:
        """The scheduler answering with ``model``, loading it if needed. At most
        ``settings.max_loaded_models`` stay loaded; the least recently used idle one is unloaded
        to make room. Loading takes seconds: call it from a worker thread, not the event loop."""
        self._last_used[model] = time.monotonic()
        scheduler = self._schedulers.get(model)
        if scheduler is not None:
            return scheduler
        with self._loading:
            scheduler = self._schedulers.get(model)
            if scheduler is None:
                self._make_room()
                engine = self.assistant.engine(model)
                if isinstance(engine, RemoteEngine):
                    # The engine batches on its own machine; Lantern keeps the line (503 when full).
                    remote = RemoteScheduler(
                        engine, parallel=self.settings.slots, max_waiting=self.settings.max_waiting
                    )
                    self._schedulers[model] = remote
                    return remote
                scheduler = BatchScheduler(
                    engine,
                    slots=self.settings.slots,
                    slot_context=self.settings.slot_context,
                    max_waiting=self.settings.max_waiting,
                    state_cache=self.assistant.state_cache(engine, streams=self.settings.slots),
                    token_gap_ms=self.assistant.config.runtime.token_gap_ms,
                    reuse_prefix=self.settings.reuse_prefix,
                )
                self._schedulers[model] = scheduler
            return scheduler

    def _make_room(self) -> None:
        while len(self._schedulers) >= max(1, self.settings.max_loaded_models):
            idle = [name for name, s in self._schedulers.items() if s.busy_slots == 0 and s.waiting == 0]
            idle.sort(key=lambda name: self._last_used.get(name, 0.0))
            if not idle:
                raise ModelBusyError(
                    f"all {len(self._schedulers)} loaded models are answering; retry when one is free"
                )
            self._unload(idle[0])

    def _unload(self, model: str) -> None:
        self._schedulers.pop(model).close()
        self.assistant.unload(model)

    def close(self) -> None:
        with self._loading:
            for model in list(self._schedulers):
                self._unload(model)


def device_registry(assistant: Assistant) -> DeviceRegistry:
    return DeviceRegistry(assistant.home.root / "devices.json")
