"""One line under the chat: the model, memory on or off, speed and how full the context is."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static


class StatusBar(Static):
    model = reactive("")
    memory_on = reactive(True)
    state = reactive("")  # "loading model…", "answering…", "" when idle
    tokens_per_s = reactive(0.0)
    context_used = reactive(0)
    context_size = reactive(0)

    def render(self) -> str:
        parts = [self.model or "no model", "memory on" if self.memory_on else "memory off"]
        if self.state:
            parts.append(self.state)
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.context_size:
            parts.append(f"context {self.context_used}/{self.context_size}")
        return " · ".join(parts)
