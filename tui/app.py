"""The Lantern terminal app: the chat screen, its dialogs, and a command for every action."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from app.assistant import Assistant
from app.errors import LanternError
from tui.screens.chat import ChatScreen
from tui.screens.problem import ProblemScreen
from tui.screens.unlock import UnlockScreen

RESTART_HINT = "fix what the message says, then start lantern again."


class LanternApp(App):
    TITLE = "Lantern"
    SUB_TITLE = "offline assistant"
    CSS_PATH = "lantern.tcss"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit")]

    def __init__(
        self,
        assistant: Assistant | None,
        startup_problem: str | None = None,
        model: str | None = None,
        ask_passphrase: bool = False,
    ):
        """``model``: a store name or a .gguf file to chat with instead of the configured default.
        ``ask_passphrase``: the home is encrypted and locked; the passphrase screen comes first."""
        super().__init__()
        self.assistant = assistant
        self.startup_problem = startup_problem
        self.start_model = model
        self.ask_passphrase = ask_passphrase

    def on_mount(self) -> None:
        if self.ask_passphrase and self.assistant is not None and self.startup_problem is None:
            self.push_screen(UnlockScreen(self.assistant), lambda _unlocked: self._open_chat())
            return
        self._open_chat()

    def _open_chat(self) -> None:
        problem = self.startup_problem
        if problem is None and self.assistant is not None:
            try:
                self.assistant.conversations.list(1)  # opens (and checks) the conversation store
            except LanternError as exc:
                problem = str(exc)
        if problem is not None or self.assistant is None:
            self.push_screen(ProblemScreen(problem or "no assistant", RESTART_HINT))
            return
        self.push_screen(ChatScreen(self.assistant, self.start_model))

    @property
    def chat(self) -> ChatScreen | None:
        screens = [s for s in self.screen_stack if isinstance(s, ChatScreen)]
        return screens[0] if screens else None

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_memory(self) -> None:
        from tui.screens.memory import MemoryScreen

        if self.assistant is not None:
            self.push_screen(MemoryScreen(self.assistant))

    def action_models(self) -> None:
        from tui.screens.models import ModelPickerScreen

        chat = self.chat
        if self.assistant is None or chat is None:
            return

        async def picked(name: str | None) -> None:
            if name:
                await chat.switch_model(name)

        self.push_screen(ModelPickerScreen(self.assistant, chat.model), picked)

    def _chat_action(self, action: str):
        async def run() -> None:
            if self.chat is not None:
                await self.chat.run_action(action)

        return run

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if self.chat is None:
            return
        yield SystemCommand("New conversation", "Start a fresh chat (Ctrl+N)", self._chat_action("new_chat"))
        yield SystemCommand(
            "Stop answer", "Stop the answer being written (Escape)", self._chat_action("stop")
        )
        yield SystemCommand("Rename conversation", "Give this chat a title (F2)", self._chat_action("rename"))
        yield SystemCommand(
            "Delete conversation", "Delete this chat, after asking (F8)", self._chat_action("delete")
        )
        yield SystemCommand(
            "Search conversations", "Filter the chat list (Ctrl+F)", self._chat_action("search")
        )
        yield SystemCommand(
            "Toggle conversation list",
            "Show or hide the sidebar (Ctrl+B)",
            self._chat_action("toggle_sidebar"),
        )
        yield SystemCommand(
            "Toggle memory", "Answers use your notes: on/off (F5)", self._chat_action("toggle_memory")
        )
        yield SystemCommand("Memory: add folders and sync", "Index notes (F3)", self.action_memory)
        yield SystemCommand("Pick model", "Switch the model (F4)", self.action_models)
        yield SystemCommand("Good answer", "Mark the last answer good (F6)", self._chat_action("thumbs_up"))
        yield SystemCommand("Bad answer", "Mark the last answer bad (F7)", self._chat_action("thumbs_down"))
        yield SystemCommand(
            "Edit answer", "Rewrite the last answer for tuning (F9)", self._chat_action("edit_answer")
        )
        yield SystemCommand("Keys", "Every key Lantern understands (F1)", self.action_help)


def run_tui(
    assistant: Assistant | None,
    startup_problem: str | None = None,
    model: str | None = None,
    ask_passphrase: bool = False,
) -> None:
    LanternApp(assistant, startup_problem, model, ask_passphrase).run()
