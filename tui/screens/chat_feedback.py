"""The chat screen's feedback actions: rate the last answer (F6/F7) or edit it (F9) into a preference pair."""

from __future__ import annotations

from textual.screen import Screen

from app.assistant import Assistant
from app.conversations import Conversation
from tui.widgets.message import AnswerMessage


class FeedbackActions(Screen):
    """Mixed into ChatScreen, which owns the state declared below and the keys. A Screen subclass
    like ConversationActions, so that both come before Screen in ChatScreen's method order."""

    assistant: Assistant
    conversation: Conversation | None

    def _last_answer(self) -> AnswerMessage | None:
        answers = [a for a in self.query(AnswerMessage) if a.message_id is not None]
        return answers[-1] if answers else None

    def _feedback(self, rating: int, edited: str | None = None) -> None:
        answer = self._last_answer()
        if answer is None or self.conversation is None:
            self.notify("There is no saved answer to rate yet.", severity="warning")
            return
        self.assistant.conversations.add_feedback(self.conversation.id, answer.message_id, rating, edited)
        label = {1: "marked good", -1: "marked bad"}[rating] if edited is None else "edited"
        answer.set_footer(f"{label}; kept for tuning your twin")

    def action_thumbs_up(self) -> None:
        self._feedback(1)

    def action_thumbs_down(self) -> None:
        self._feedback(-1)

    def action_edit_answer(self) -> None:
        from tui.screens.edit_answer import EditAnswerScreen

        answer = self._last_answer()
        if answer is None:
            self.notify("There is no saved answer to edit yet.", severity="warning")
            return

        def edited(text: str | None) -> None:
            if text and text.strip() and text != answer.text:
                self._feedback(-1, edited=text)

        self.app.push_screen(EditAnswerScreen(answer.text), edited)
