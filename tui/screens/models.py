"""Pick the model; it loads in a worker while a progress bar runs."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from app.assistant import Assistant
from app.errors import LanternError
from app.model_store import ModelEntry
from app.sizes import human_bytes


class ModelPickerScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, assistant: Assistant, current: str) -> None:
        super().__init__()
        self.assistant = assistant
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static("Pick a model (Enter loads it). Add more with 'lantern models add PATH'.")
            yield OptionList(id="model-options")
            yield ProgressBar(id="model-progress", show_eta=False, show_percentage=False)
            yield Static("", id="model-state", markup=False)

    def on_mount(self) -> None:
        self.query_one("#model-progress").display = False
        options = self.query_one(OptionList)
        entries = self.assistant.models.list()
        for entry in entries:
            quant = entry.summary.quantization if entry.summary else "…"
            options.add_option(
                Option(self._line(entry, quant), id=entry.name, disabled=not entry.path.is_file())
            )
        for remote in self.assistant.models.list_remote():  # served elsewhere: the URL, no file
            marker = "● " if remote.name == self.current else "  "
            options.add_option(
                Option(Text(f"{marker}{remote.name:<28} {'remote':<8} {remote.url}"), id=remote.name)
            )
        options.focus()
        unread = [e for e in entries if e.summary is None and e.path.is_file()]
        if unread:
            self.read_quantization([e.name for e in unread])

    def _line(self, entry: ModelEntry, quant: str) -> Text:
        size = human_bytes(entry.path.stat().st_size) if entry.path.is_file() else "file missing"
        marker = "● " if entry.name == self.current else "  "
        return Text(f"{marker}{entry.name:<28} {quant:<8} {size:>10}")

    @work(thread=True, group="model-info")
    def read_quantization(self, names: list[str]) -> None:
        """Models never inspected yet are read once (a few seconds each) and the result cached."""
        for name in names:
            try:
                entry, summary = self.assistant.models.info(name)
                quant = summary.quantization
            except LanternError:
                continue
            options = self.query_one(OptionList)
            self.app.call_from_thread(options.replace_option_prompt, name, self._line(entry, quant))

    @on(OptionList.OptionSelected)
    def pick(self, event: OptionList.OptionSelected) -> None:
        self.query_one("#model-progress", ProgressBar).display = True
        self.query_one("#model-state", Static).update(f"Loading {event.option.id}…")
        self.load(event.option.id)

    @work(thread=True, exclusive=True, group="model-picker")
    def load(self, name: str) -> None:
        try:
            self.assistant.engine(name)
        except LanternError as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self.dismiss, name)

    def _failed(self, message: str) -> None:
        self.query_one("#model-progress").display = False
        self.query_one("#model-state", Static).update(f"error: {message}")
