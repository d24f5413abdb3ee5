"""The passphrase screen: an encrypted data home is unlocked here, once, before the chat opens.

The passphrase is typed into a masked input, handed to the home's key in a worker thread (scrypt
takes a moment) and never shown, logged or kept on screen: the input is cleared on every try.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from app.assistant import Assistant
from app.errors import LanternError


class UnlockScreen(Screen[bool]):
    """Dismissed with True once the home is unlocked; Escape or Ctrl+Q quits Lantern."""

    BINDINGS = [Binding("escape,ctrl+q", "app.quit", "Quit")]

    def __init__(self, assistant: Assistant) -> None:
        super().__init__()
        self.assistant = assistant

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(classes="dialog", id="unlock"):
            yield Static("This data home is encrypted.", id="unlock-title")
            yield Static("Type its passphrase and press Enter (Escape quits).", id="unlock-hint")
            yield Input(password=True, placeholder="passphrase", id="passphrase")
            yield Static("", id="unlock-error", classes="error", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#passphrase", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        field = event.input
        secret = field.value.encode("utf-8")
        field.clear()  # never left on screen, whatever happens next
        if not secret:
            self._show_error("type the passphrase first")
            return
        field.disabled = True
        self._show_error("")
        self.query_one("#unlock-hint", Static).update("Unlocking…")
        self._unlock(secret)

    # The description is given: Textual's default one would spell out the arguments, the secret.
    @work(thread=True, exclusive=True, group="unlock", description="unlocking the data home")
    def _unlock(self, secret: bytes) -> None:
        try:
            self.assistant.unlock_with(secret)
        except LanternError as exc:  # a wrong passphrase, a damaged keyring: say so, let them retry
            self.app.call_from_thread(self._failed, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a crash would print a traceback with the secret in it
            self.app.call_from_thread(self._failed, f"could not unlock the data home: {exc}")
            return
        self.app.call_from_thread(self.dismiss, True)

    def _failed(self, message: str) -> None:
        self.query_one("#unlock-hint", Static).update("Type its passphrase and press Enter (Escape quits).")
        self._show_error(message)
        field = self.query_one("#passphrase", Input)
        field.disabled = False
        field.focus()

    def _show_error(self, message: str) -> None:
        self.query_one("#unlock-error", Static).update(message)
