"""A cited note, opened at the passage the answer used."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static, TextArea

from app.memory import cite
from rag.ingest import is_virtual_root
from rag.retrieval import RetrievalHit


def source_path(hit: RetrievalHit) -> Path | None:
    if is_virtual_root(hit.root):
        return None
    root = Path(hit.root)
    return root if root.is_file() else root / hit.source


class SourceViewScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "dismiss(None)", "Close")]

    def __init__(self, hit: RetrievalHit) -> None:
        super().__init__()
        self.hit = hit

    def compose(self) -> ComposeResult:
        path = source_path(self.hit)
        text, where = self.hit.text, "the passage (the note has no file)"
        if path is not None and path.suffix.lower() not in (".pdf",):
            try:
                text, where = path.read_text(encoding="utf-8", errors="replace"), str(path)
            except OSError as exc:
                where = f"{path} could not be read ({exc.strerror}); showing the passage"
        elif path is not None:
            where = f"{path} (PDF: showing the passage)"
        with Vertical(classes="dialog wide"):
            yield Static(f"{cite(self.hit)}\n{where}", markup=False, id="source-title")
            yield TextArea(text, read_only=True, soft_wrap=True, id="source-text")

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        first_line = self.hit.text.strip().splitlines()[0] if self.hit.text.strip() else ""
        for number, line in enumerate(area.text.splitlines()):
            if first_line and first_line[:60] in line:
                area.scroll_to(y=max(0, number - 2), animate=False)
                area.move_cursor((number, 0))
                break
        area.focus()
