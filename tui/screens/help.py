"""Every key Lantern's chat understands."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# Lantern keys

| key | what it does |
|---|---|
| Enter | send the message |
| Shift+Enter, Ctrl+J | new line in the message |
| Escape | stop the answer being written |
| Ctrl+N | new conversation |
| Ctrl+B | show or hide the conversation list |
| Ctrl+F | search conversations |
| F2 | rename this conversation |
| F8 | delete this conversation (asks first) |
| F3 | memory: add folders, sync |
| F5 | answers use memory: on / off |
| F4 | pick the model |
| F6 / F7 | the last answer was good / bad |
| F9 | edit the last answer into a good one |
| Tab | move between list, sources and message box |
| Ctrl+P | command palette: every action, and themes |
| F1 | this help |
| Ctrl+Q | quit |

Everything stays on this computer. Ratings and edits are kept as preference pairs for tuning
your twin later.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide"):
            yield Markdown(HELP)
