"""The Lantern terminal app. A first chat screen; the full TUI is built in its own issue."""

from __future__ import annotations

from textual import work
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Input, Static

from app.assistant import Assistant
from app.conversations import Conversation
from app.errors import LanternError
from app.formatting import format_citations


class LanternApp(App):
    TITLE = "Lantern"
    SUB_TITLE = "offline assistant"
    CSS = """
    #log { height: 1fr; padding: 0 1; }
    .user { color: $accent; margin-top: 1; }
    .answer { margin-bottom: 1; }
    .error { color: $error; }
    """
    AUTO_FOCUS = "#prompt"
    BINDINGS = [("ctrl+q", "quit", "Quit"), ("ctrl+n", "new_chat", "New chat")]

    def __init__(self, assistant: Assistant):
        super().__init__()
        self.assistant = assistant
        self.conversation: Conversation | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(
            Static(
                f"Chatting offline with {self.assistant.config.default_model}. "
                "Type a message and press Enter.",
                id="welcome",
            ),
            id="log",
        )
        yield Input(placeholder="Ask anything…", id="prompt")
        yield Footer()

    def action_new_chat(self) -> None:
        self.conversation = None
        self.query_one("#log").remove_children()

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value
        if not text.strip():
            return
        event.input.value = ""
        event.input.disabled = True
        log = self.query_one("#log", VerticalScroll)
        await log.mount(Static(f"you: {text}", classes="user", markup=False))
        answer = Static("", classes="answer", markup=False)
        await log.mount(answer)
        self.answer(text, answer)

    @work(thread=True, exclusive=True)
    def answer(self, text: str, widget: Static) -> None:
        shown = ""
        try:
            turn = self.assistant.ask(text, conversation=self.conversation)
            for piece in turn:
                shown += piece
                self.call_from_thread(widget.update, shown)
                self.call_from_thread(self.query_one("#log").scroll_end, animate=False)
            if turn.citations:
                shown += "\n\n" + format_citations(turn.citations)
                self.call_from_thread(widget.update, shown)
            if turn.conversation is not None:
                self.conversation = self.assistant.conversations.get(turn.conversation.id)
        except LanternError as exc:
            self.call_from_thread(widget.update, f"error: {exc}")
            self.call_from_thread(widget.add_class, "error")
        finally:
            self.call_from_thread(self._enable_prompt)

    def _enable_prompt(self) -> None:
        prompt = self.query_one("#prompt", Input)
        prompt.disabled = False
        prompt.focus()


def run_tui(assistant: Assistant) -> None:
    LanternApp(assistant).run()
