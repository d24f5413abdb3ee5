"""One message in the chat log: the user's words, or an answer rendered as Markdown."""

from __future__ import annotations

import time

from textual.containers import Vertical
from textual.widgets import Markdown, Static


class UserMessage(Static):
    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False, classes="user-message")


class AnswerMessage(Vertical):
    """An answer; streamed pieces are appended to its Markdown as they arrive."""

    def __init__(self, text: str = "", message_id: int | None = None) -> None:
        super().__init__(classes="answer-message")
        self.text = text
        self.message_id = message_id  # the stored message, once the answer is saved
        self.first_piece_at: float | None = None  # perf_counter when the first piece was shown
        self._markdown = Markdown(text)
        self._footer = Static("", classes="answer-footer", markup=False)
        self._stream = None

    def compose(self):
        yield self._markdown
        yield self._footer

    async def append(self, piece: str) -> None:
        if self._stream is None:
            self._stream = Markdown.get_stream(self._markdown)
        if self.first_piece_at is None:
            self.first_piece_at = time.perf_counter()
        self.text += piece
        await self._stream.write(piece)

    async def finish(self, footer: str) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.set_footer(footer)

    def set_footer(self, footer: str) -> None:
        self._footer.update(footer)

    async def replace_text(self, text: str) -> None:
        self.text = text
        await self._markdown.update(text)

    def show_error(self, message: str) -> None:
        self.add_class("error")
        self._footer.update(f"error: {message}")
