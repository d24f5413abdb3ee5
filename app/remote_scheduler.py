"""`lantern serve` in front of a remote engine: Lantern's own line of requests, the engine's answers.

The batch scheduler (app/batching.py) owns a llama.cpp context; a remote engine batches on its own
machine. What Lantern keeps is the line: at most ``parallel`` answers asked of the engine at once,
``max_waiting`` more waiting in order, and a full line refused (503 upstream) rather than piled on
the engine. Each answer is read from the engine in a worker thread and handed to the request's
event loop piece by piece as it arrives: nothing is gathered before it is passed on.
"""

from __future__ import annotations

import asyncio
import collections
import threading

from app.batching import DONE, BatchedStream, QueueFullError
from app.chat_template import ChatMessage
from app.context_budget import PromptPlan
from app.engine import GenerationSettings
from app.errors import LanternError
from app.remote_engine import EngineCutError, RemoteEngine

CANCEL_POLL_S = 0.05  # how soon a client's cancel reaches the engine's stream


class RemoteScheduler:
    def __init__(self, engine: RemoteEngine, parallel: int = 1, max_waiting: int = 16):
        self.engine = engine
        self.slots = max(1, parallel)
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._active = 0
        self._waiting: collections.deque[BatchedStream] = collections.deque()
        self._closing = False

    def plan_chat(self, messages: list[ChatMessage], max_tokens: int) -> PromptPlan:
        return self.engine.plan(messages, max_tokens)

    def plan_text(self, prompt: str, max_tokens: int) -> PromptPlan:
        raise LanternError(
            f"{self.engine.name} is served by a remote engine; text completions are not passed on "
            "(use /v1/chat/completions)"
        )

    def submit(self, plan: PromptPlan, settings: GenerationSettings) -> BatchedStream:
        stream = BatchedStream(plan, settings, asyncio.get_running_loop())
        with self._lock:
            self._waiting = collections.deque(w for w in self._waiting if not w.cancelled)
            if self._closing:
                raise LanternError("the server is shutting down")
            if self._active >= self.slots and len(self._waiting) >= self.max_waiting:
                raise QueueFullError(
                    f"all {self.slots} answers the engine is asked for at once are running and "
                    f"{len(self._waiting)} requests are waiting"
                )
            self._waiting.append(stream)
            self._start_next()
        return stream

    def _start_next(self) -> None:
        """Under the lock: hand waiting requests to workers while the engine has room."""
        while self._active < self.slots and self._waiting:
            stream = self._waiting.popleft()
            if stream.cancelled:
                continue
            self._active += 1
            threading.Thread(target=self._answer, args=(stream,), name="lantern-remote", daemon=True).start()

    def _answer(self, stream: BatchedStream) -> None:
        try:
            self._relay(stream)
        finally:
            with self._lock:
                self._active -= 1
                self._start_next()

    def _relay(self, stream: BatchedStream) -> None:
        try:
            answer = self.engine.stream_chat(stream.plan.messages, stream.settings)
        except LanternError as exc:
            stream._emit(exc)
            return
        done = threading.Event()
        watcher = threading.Thread(target=self._pass_cancel, args=(stream, answer, done), daemon=True)
        watcher.start()
        try:
            for piece in answer:
                stream._emit(piece)
        except EngineCutError:
            pass  # the partial answer ends normally here; its result says "cut" and it is saved so
        except LanternError as exc:
            stream.result = answer.result
            stream._emit(exc)
            return
        finally:
            done.set()
        stream.result = answer.result
        stream._emit(DONE)

    @staticmethod
    def _pass_cancel(stream: BatchedStream, answer, done: threading.Event) -> None:
        while not done.wait(CANCEL_POLL_S):
            if stream.cancelled:
                answer.cancel()
                return

    @property
    def busy_slots(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            waiting, self._waiting = list(self._waiting), collections.deque()
        for stream in waiting:
            stream.cancel()
            stream._emit(LanternError("the server is shutting down"))
