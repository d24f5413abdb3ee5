"""The chat screen: conversations on the left, the chat in the middle, sources and status below."""

from __future__ import annotations

import threading

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Static

from app.assistant import Assistant, Turn
from app.conversations import Conversation
from app.errors import LanternError
from tui.screens.chat_conversations import ConversationActions
from tui.screens.chat_feedback import FeedbackActions
from tui.widgets.conversation_list import ConversationList
from tui.widgets.message import AnswerMessage, UserMessage
from tui.widgets.prompt import PromptArea
from tui.widgets.sources import SourcesPanel
from tui.widgets.status_bar import StatusBar

SHOWN_PROMPT_CHARS = 2000  # a huge paste is sent whole but shown shortened
SIDEBAR_MIN_WIDTH = 100  # narrower terminals start with the sidebar hidden (Ctrl+B shows it)


class ChatScreen(ConversationActions, FeedbackActions):
    """Every key of the chat is bound here; the conversation-list and feedback actions live in
    their own modules (chat_conversations, chat_feedback)."""

    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+n", "new_chat", "New"),
        Binding("ctrl+b", "toggle_sidebar", "Chats"),
        Binding("f1", "app.help", "Help"),
        Binding("f2", "rename", "Rename", show=False),
        Binding("f3", "app.memory", "Memory", show=False),
        Binding("f4", "app.models", "Models", show=False),
        Binding("f5", "toggle_memory", "Memory on/off", show=False),
        # priority: the message box would take F6/F7 for selecting a line/everything
        Binding("f6", "thumbs_up", "Good answer", show=False, priority=True),
        Binding("f7", "thumbs_down", "Bad answer", show=False, priority=True),
        Binding("f8", "delete", "Delete chat", show=False),
        Binding("f9", "edit_answer", "Edit answer", show=False),
        Binding("ctrl+f", "search", "Search chats", show=False),
    ]

    def __init__(self, assistant: Assistant, model: str | None = None) -> None:
        super().__init__()
        self.assistant = assistant
        self.conversation: Conversation | None = None
        self.model = assistant.model_key(model)  # a .gguf path becomes absolute, as `ask` saves it
        self.use_memory = assistant.config.memory.enabled
        self.answering = False
        self.model_ready = threading.Event()
        self._turn: Turn | None = None
        self._stop_requested = False
        self._model_error: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield ConversationList(id="sidebar")
            with Vertical(id="chat-column"):
                yield VerticalScroll(self._welcome(), id="log")
                yield SourcesPanel(id="sources")
                yield PromptArea(id="prompt")
        yield StatusBar(id="status")
        yield Footer()

    def _welcome(self) -> Static:
        return Static(
            f"Chatting offline with {self.model}. Enter sends, Shift+Enter or Ctrl+J adds a line, "
            "Escape stops an answer, F1 lists every key.",
            id="welcome",
        )

    def on_mount(self) -> None:
        self.query_one(SourcesPanel).display = False
        self.query_one("#sidebar").display = self.app.size.width >= SIDEBAR_MIN_WIDTH
        status = self.query_one(StatusBar)
        status.model, status.memory_on = self.model, self.use_memory
        self.refresh_sidebar()
        self.query_one(PromptArea).focus()
        self.start_loading(self.model)
        # Seen under tmux on a loaded machine: the first full paint can be lost while the terminal
        # answers Textual's capability queries, leaving only later updates on screen. One full
        # repaint shortly after start makes the screen whole either way.
        self.set_timer(0.6, self._repaint_everything)

    def _repaint_everything(self) -> None:
        self.app.refresh(repaint=True, layout=True)

    # --- the model ---------------------------------------------------------------------------

    def start_loading(self, name: str) -> None:
        # Cleared here, on the UI thread, so a question sent right now waits for this load.
        self.model_ready.clear()
        self._model_error = None
        self.load_model(name)

    @work(thread=True, exclusive=True, group="model")
    def load_model(self, name: str) -> None:
        """Load in the background so the first question does not wait for it."""
        self.app.call_from_thread(setattr, self.query_one(StatusBar), "state", "loading model…")
        try:
            engine = self.assistant.engine(name)
        except LanternError as exc:
            self.app.call_from_thread(self._model_failed, str(exc))
            return
        self.app.call_from_thread(self._model_loaded, name, engine.context_length)

    def _model_loaded(self, name: str, context_length: int) -> None:
        if name != self.model:
            return  # another model was picked meanwhile
        status = self.query_one(StatusBar)
        status.model, status.state, status.context_size = name, "", context_length
        self.model_ready.set()

    def _model_failed(self, message: str) -> None:
        self._model_error = f"{message}. Press F4 to pick another model."
        self.model_ready.set()  # questions fail with this message instead of waiting forever
        self.query_one(StatusBar).state = "model not loaded"
        self.query_one("#log").mount(
            Static(f"error: {message}. Press F4 to pick another model.", classes="error", markup=False)
        )

    async def switch_model(self, name: str) -> None:
        if name != self.model:
            self.model = name
            self.query_one(StatusBar).model = name
            await self.action_new_chat()
        # The picker has loaded it already.
        self._model_error = None
        self.query_one(StatusBar).state = ""
        self.query_one(StatusBar).context_size = self.assistant.engine(name).context_length
        self.model_ready.set()
        self.notify(f"Switched to {name}. New chats use it.")

    # --- asking ------------------------------------------------------------------------------

    @on(PromptArea.Submitted)
    async def send(self, event: PromptArea.Submitted) -> None:
        text = event.text
        if self.answering:
            self.notify("An answer is still coming; press Escape to stop it.", severity="warning")
            return
        if not text.strip():
            self.notify("Type a message first.", severity="warning")
            return
        self.query_one(PromptArea).clear()
        log = self.query_one("#log", VerticalScroll)
        shown = (
            text
            if len(text) <= SHOWN_PROMPT_CHARS
            else (text[:SHOWN_PROMPT_CHARS] + f"… ({len(text):,} characters in all)")
        )
        answer = AnswerMessage()
        await log.mount(UserMessage(shown))
        await log.mount(answer)
        log.scroll_end(animate=False)
        self.answering, self._stop_requested = True, False
        self.query_one(StatusBar).state = "answering…"
        self.answer(text, answer)

    @work(thread=True, exclusive=True, group="answer")
    def answer(self, text: str, widget: AnswerMessage) -> None:
        turn = None
        error = None
        try:
            self.model_ready.wait()
            if self._model_error is not None:
                raise LanternError(self._model_error)
            turn = self.assistant.ask(
                text, conversation=self.conversation, model=self.model, use_memory=self.use_memory
            )
            self._turn = turn
            if self._stop_requested:
                turn.stream.cancel()
            log = self.query_one("#log", VerticalScroll)
            for piece in turn:
                self.app.call_from_thread(widget.append, piece)
                self.app.call_from_thread(log.scroll_end, animate=False)
        except LanternError as exc:
            error = str(exc)
        except Exception as exc:  # a bug must not take the whole app down with it
            error = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            self._turn = None
            self.app.call_from_thread(self._answer_done, turn, widget, error)

    async def _answer_done(self, turn: Turn | None, widget: AnswerMessage, error: str | None) -> None:
        status = self.query_one(StatusBar)
        if not widget.is_attached:  # the user moved on (new chat, other conversation) meanwhile
            status.state = ""
            self.answering = False
            return
        status.state = ""
        if error is not None:
            widget.show_error(error)
        if turn is not None and turn.result is not None:
            result = turn.result
            footer = f"{result.completion_tokens} tokens, {result.decode_tokens_per_s:.1f} tok/s"
            if result.finish_reason == "cancelled":
                footer = "[stopped] " + footer
            elif result.finish_reason == "cut":  # a remote engine broke off; the partial answer is saved
                footer = "[cut] " + footer
            if result.dropped_messages:
                footer += f" · {result.dropped_messages} old messages left out to fit the context"
            await widget.finish(footer)
            status.tokens_per_s = result.decode_tokens_per_s
            status.context_used = result.prompt_tokens + result.completion_tokens
            if turn.conversation is not None:
                try:
                    self.conversation = self.assistant.conversations.get(turn.conversation.id)
                    widget.message_id = self.conversation.messages[-1].id
                except LanternError as exc:
                    widget.show_error(str(exc))
            self.refresh_sidebar()
        self.query_one(SourcesPanel).show(turn.citations if turn is not None else [])
        self.query_one(PromptArea).focus()
        self.answering = False  # last: the answer is saved and rateable from here on

    def action_stop(self) -> None:
        if not self.answering:
            return
        self._stop_requested = True
        if self._turn is not None:
            self._turn.stream.cancel()

    # --- memory and sources ------------------------------------------------------------------

    def action_toggle_memory(self) -> None:
        self.use_memory = not self.use_memory
        self.query_one(StatusBar).memory_on = self.use_memory
        self.notify("Answers now draw on your notes." if self.use_memory else "Memory is off for answers.")

    @on(SourcesPanel.Opened)
    def open_source(self, event: SourcesPanel.Opened) -> None:
        from tui.screens.source_view import SourceViewScreen

        self.app.push_screen(SourceViewScreen(event.hit))
