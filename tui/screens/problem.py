"""When Lantern cannot start: what is wrong and what to do, instead of a traceback."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class ProblemScreen(Screen):
    BINDINGS = [Binding("q,escape,ctrl+q", "app.quit", "Quit")]

    def __init__(self, problem: str, what_to_do: str) -> None:
        super().__init__()
        self.problem = problem
        self.what_to_do = what_to_do

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(classes="dialog wide", id="problem"):
            yield Static("Lantern cannot start", id="problem-title")
            yield Static(self.problem, markup=False, id="problem-text")
            yield Static("What to do: " + self.what_to_do, markup=False, id="problem-fix")
            yield Static("Press q to quit.")
        yield Footer()
