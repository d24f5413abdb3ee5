"""The sidebar: a search box over the conversations and the list of them, newest first."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from app.conversations import Conversation


class ConversationList(Vertical):
    @dataclass
    class Picked(Message):
        conversation_id: str

    def compose(self):
        yield Input(placeholder="Search chats", id="conversation-search")
        yield OptionList(id="conversation-options")

    def show(self, rows: list[tuple[Conversation, int]], current: str | None) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options(Option(Text(conversation.title), id=conversation.id) for conversation, _ in rows)
        if current is not None:
            try:
                options.highlighted = options.get_option_index(current)
            except Exception:  # the current conversation is filtered out by the search
                options.highlighted = None
        if not rows:
            options.add_option(Option("No conversations yet", disabled=True))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.post_message(self.Picked(event.option.id))
