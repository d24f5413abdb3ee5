"""Add folders to memory and sync them, with a progress bar; the work runs in a worker."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, ProgressBar, Static

from app.assistant import Assistant
from app.errors import LanternError


class MemoryScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, assistant: Assistant) -> None:
        super().__init__()
        self.assistant = assistant
        self.busy = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="memory-dialog"):
            yield Static("Memory: your notes, searched for every answer.", id="memory-title")
            yield Static("", id="memory-roots", markup=False)
            yield Input(placeholder="Folder or file to add, e.g. ~/notes", id="memory-path")
            with Horizontal(classes="buttons"):
                yield Button("Add", variant="primary", id="memory-add")
                yield Button("Sync all", id="memory-sync")
                yield Button("Close", id="memory-close")
            yield ProgressBar(id="memory-progress", show_eta=False)
            yield Static("", id="memory-report", markup=False)

    def on_mount(self) -> None:
        self.query_one("#memory-progress").display = False  # shown once there is work
        self._show_roots()
        self.query_one("#memory-path", Input).focus()

    def _show_roots(self) -> None:
        try:
            store = self.assistant.memory.store
            lines = [
                f"{root}  ({sum(1 for e in store.files.values() if e.root == root)} files)"
                for root in store.roots
            ]
            text = "\n".join(lines) if lines else "Nothing added yet."
        except LanternError as exc:
            text = f"error: {exc}"
        self.query_one("#memory-roots", Static).update(text)

    @on(Input.Submitted, "#memory-path")
    @on(Button.Pressed, "#memory-add")
    def add(self) -> None:
        path = self.query_one("#memory-path", Input).value.strip()
        if not path:
            self.notify("Type the path of a folder or file first.", severity="warning")
            return
        self._start(Path(path).expanduser())

    @on(Button.Pressed, "#memory-sync")
    def sync(self) -> None:
        self._start(None)

    @on(Button.Pressed, "#memory-close")
    def action_close(self) -> None:
        if self.busy:
            self.notify("Memory is still being updated; it finishes in the background.")
        self.dismiss(None)

    def _start(self, path: Path | None) -> None:
        if self.busy:
            self.notify("Already working; wait for it to finish.", severity="warning")
            return
        self.busy = True
        bar = self.query_one("#memory-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.query_one("#memory-report", Static).update("Reading notes…")
        self.run_memory_job(path)

    @work(thread=True, exclusive=True, group="memory")
    def run_memory_job(self, path: Path | None) -> None:
        bar = self.query_one("#memory-progress", ProgressBar)

        def progress(done: int, total: int) -> None:
            self.app.call_from_thread(bar.update, total=max(total, 1), progress=done if total else 1)

        try:
            memory = self.assistant.memory
            report = memory.add([path], progress) if path is not None else memory.sync(progress)
            message = "Done: " + report.summary() + "."
            if report.skipped_unreadable:
                message += "\n" + "\n".join(f"skipped {p}: {why}" for p, why in report.skipped_unreadable[:5])
        except LanternError as exc:
            message = f"error: {exc}"
        self.app.call_from_thread(self._finished, message)

    def _finished(self, message: str) -> None:
        self.busy = False
        self.query_one("#memory-report", Static).update(message)
        self._show_roots()
