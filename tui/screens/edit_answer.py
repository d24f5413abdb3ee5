"""Write the answer the model should have given; it is kept as a preference pair for the twin."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static, TextArea


class EditAnswerScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("ctrl+s", "save", "Save"), Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static("Edit the answer into a good one. Ctrl+S saves, Escape cancels.")
            yield TextArea(self.answer, id="edited", soft_wrap=True)

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)
