"""The passages the last answer drew on, with file and heading; Enter opens one."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from app.memory import cite
from rag.retrieval import RetrievalHit


class SourcesPanel(OptionList):
    @dataclass
    class Opened(Message):
        hit: RetrievalHit

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hits: list[RetrievalHit] = []
        self.border_title = "Sources"

    def show(self, hits: list[RetrievalHit]) -> None:
        self.hits = hits
        self.clear_options()
        self.add_options(
            Option(Text(f"[{n}] {cite(hit)}"), id=str(n - 1)) for n, hit in enumerate(hits, start=1)
        )
        self.display = bool(hits)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.Opened(self.hits[int(event.option.id)]))
