"""The chat screen's conversation-list actions: new, open, rename, delete, search, show or hide the list."""

from __future__ import annotations

from textual import on
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Input

from app.assistant import Assistant
from app.conversations import Conversation
from tui.widgets.conversation_list import ConversationList
from tui.widgets.message import AnswerMessage, UserMessage
from tui.widgets.prompt import PromptArea
from tui.widgets.sources import SourcesPanel
from tui.widgets.status_bar import StatusBar


class ConversationActions(Screen):
    """Mixed into ChatScreen, which owns the state declared below, the keys, the model (start_loading)
    and the chat log (_welcome, action_stop). A Screen subclass only so that Textual registers the
    @on handlers here."""

    assistant: Assistant
    conversation: Conversation | None
    model: str
    answering: bool

    def refresh_sidebar(self, search: str | None = None) -> None:
        if search is None:
            search = self.query_one("#conversation-search", Input).value
        rows = self.assistant.conversations.search(search)
        current = self.conversation.id if self.conversation else None
        self.query_one(ConversationList).show(rows, current)

    @on(Input.Changed, "#conversation-search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.refresh_sidebar(event.value)

    @on(ConversationList.Picked)
    async def open_conversation(self, event: ConversationList.Picked) -> None:
        if self.answering:
            self.notify("Wait for the answer, or press Escape to stop it.", severity="warning")
            return
        conversation = self.assistant.conversations.get(event.conversation_id)
        self.conversation = conversation
        log = self.query_one("#log", VerticalScroll)
        await log.remove_children()
        for message in conversation.messages:
            if message.role == "user":
                await log.mount(UserMessage(message.content))
            else:
                answer = AnswerMessage(message.content, message_id=message.id)
                await log.mount(answer)
                if message.is_cut:
                    answer.set_footer("[cut] the engine broke off this answer")
        log.scroll_end(animate=False)
        self.query_one(SourcesPanel).show([])
        if conversation.model != self.model:
            self.notify(f"This chat was with {conversation.model}; it continues with it.")
            self.model = conversation.model
            self.query_one(StatusBar).model = conversation.model
            self.start_loading(conversation.model)
        self.query_one(PromptArea).focus()

    async def action_new_chat(self) -> None:
        if self.answering:
            self.action_stop()
        self.conversation = None
        log = self.query_one("#log", VerticalScroll)
        await log.remove_children()
        await log.mount(self._welcome())
        self.query_one(SourcesPanel).show([])
        self.refresh_sidebar()
        self.query_one(PromptArea).focus()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one("#sidebar")
        sidebar.display = not sidebar.display

    def action_search(self) -> None:
        self.query_one("#sidebar").display = True
        self.query_one("#conversation-search", Input).focus()

    def action_rename(self) -> None:
        from tui.screens.rename import RenameScreen

        if self.conversation is None:
            self.notify("Nothing to rename yet: ask something first.", severity="warning")
            return
        conversation = self.conversation

        def renamed(title: str | None) -> None:
            if title:
                self.assistant.conversations.rename(conversation.id, title)
                self.conversation = self.assistant.conversations.get(conversation.id)
                self.refresh_sidebar()

        self.app.push_screen(RenameScreen(conversation.title), renamed)

    def action_delete(self) -> None:
        from tui.screens.confirm import ConfirmScreen

        if self.conversation is None:
            self.notify("No saved conversation is open.", severity="warning")
            return
        if self.answering:
            self.notify("Stop the answer (Escape) before deleting this chat.", severity="warning")
            return
        conversation = self.conversation

        async def confirmed(yes: bool | None) -> None:
            if yes:
                self.assistant.conversations.delete(conversation.id)
                self.notify(f"Deleted “{conversation.title}”.")
                await self.action_new_chat()

        self.app.push_screen(ConfirmScreen(f"Delete “{conversation.title}” and all its messages?"), confirmed)
