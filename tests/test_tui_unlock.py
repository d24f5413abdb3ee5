"""An encrypted data home in the terminal app: the passphrase is typed on its own screen, once."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from app.assistant import Assistant
from app.cli.main import cli
from app.sealing import encrypt_home
from rag.crypto import Keyring
from tests.conftest import LANTERN, run_lantern
from tests.memory_fixtures import make_notes
from tests.terminal import start_in_terminal, tmux, wait_for_screen, wait_until_gone
from tests.tui_pilot import greedy, run_app, until
from tui.app import LanternApp
from tui.screens.chat import ChatScreen
from tui.screens.unlock import UnlockScreen
from tui.widgets.prompt import PromptArea
from tui.widgets.sources import SourcesPanel

PASSPHRASE = "correct horse battery staple"
WRONG = "incorrect pony"


def _encrypt(passphrase: str) -> None:
    owner = Assistant()
    encrypt_home(owner, passphrase.encode())
    owner.close()


def _locked_assistant() -> Assistant:
    """The home as `lantern` hands it to the TUI: nothing in the environment, no more prompts."""
    assistant = Assistant()
    assistant.key.stop_asking()
    return greedy(assistant, max_tokens=16)


async def _type_passphrase(pilot, text: str) -> None:
    field = pilot.app.screen.query_one("#passphrase", Input)
    field.focus()
    field.insert_text_at_cursor(text)
    await pilot.press("enter")


def _error_line(app: LanternApp) -> str:
    return str(app.screen.query_one("#unlock-error", Static).content)


def _run(assistant: Assistant, scenario, size=(100, 30)):
    return run_app(LanternApp(assistant, ask_passphrase=True), scenario, size)


def test_a_wrong_passphrase_is_refused_and_the_right_one_opens_the_chat_with_the_notes(
    home, tmp_path, monkeypatch
):
    monkeypatch.delenv("LANTERN_PASSPHRASE", raising=False)
    monkeypatch.delenv("LANTERN_KEY_FILE", raising=False)
    owner = Assistant()
    owner.memory.add([make_notes(tmp_path / "notes")])
    encrypt_home(owner, PASSPHRASE.encode())
    owner.close()
    assistant = _locked_assistant()

    async def scenario(pilot):
        app = pilot.app
        on_unlock_screen = isinstance(app.screen, UnlockScreen)
        field = app.screen.query_one("#passphrase", Input)
        field.focus()
        field.insert_text_at_cursor(WRONG)
        masked = WRONG not in app.export_screenshot()
        await pilot.press("enter")
        await until(pilot, lambda: _error_line(app) != "" and not field.disabled)
        refused = (_error_line(app), isinstance(app.screen, UnlockScreen), field.value)

        await _type_passphrase(pilot, PASSPHRASE)
        await until(pilot, lambda: isinstance(app.screen, ChatScreen))
        chat = app.screen
        await until(pilot, chat.model_ready.is_set)
        prompt = chat.query_one(PromptArea)
        prompt.focus()
        prompt.insert("Who services the boiler?")
        await pilot.press("enter")
        await until(pilot, lambda: not chat.answering and chat.query_one(SourcesPanel).option_count > 0)
        sources = chat.query_one(SourcesPanel)
        cited = [str(sources.get_option_at_index(i).prompt) for i in range(sources.option_count)]
        return on_unlock_screen, masked, refused, cited

    on_unlock_screen, masked, (error, still_asking, left_in_field), cited = _run(assistant, scenario)
    assert on_unlock_screen and masked
    assert "wrong passphrase" in error and still_asking and left_in_field == ""
    assert cited[0] == "[1] home/scan.pdf › page 1"


def test_a_home_whose_memory_alone_was_encrypted_is_unlocked_on_the_same_screen(home, monkeypatch):
    monkeypatch.delenv("LANTERN_PASSPHRASE", raising=False)
    monkeypatch.delenv("LANTERN_KEY_FILE", raising=False)
    (home / "memory").mkdir(parents=True)
    keyring, _ = Keyring.create(PASSPHRASE.encode())  # the memory-only keyring of earlier homes
    (home / "memory" / "keyring.json").write_bytes(keyring.to_bytes())
    assistant = _locked_assistant()
    assert assistant.memory.is_encrypted() and not assistant.key.is_encrypted()

    async def scenario(pilot):
        app = pilot.app
        await _type_passphrase(pilot, WRONG)
        await until(pilot, lambda: _error_line(app) != "")
        refused = _error_line(app), isinstance(app.screen, UnlockScreen)
        await _type_passphrase(pilot, PASSPHRASE)
        await until(pilot, lambda: isinstance(app.screen, ChatScreen))
        return refused, assistant.memory.has_notes()

    (error, still_asking), has_notes = _run(assistant, scenario)
    assert "wrong passphrase" in error and still_asking
    assert has_notes is False  # the memory opened: empty, and no prompt behind the screen


class _Terminal:
    """A stdin that is a terminal: `lantern` would be allowed to prompt on it."""

    def isatty(self) -> bool:
        return True

    def readline(self, *_args) -> str:
        raise AssertionError("lantern prompted on the terminal instead of the passphrase screen")

    read = readline


def _start_tui(monkeypatch) -> dict:
    """`lantern` with no command, in a terminal, up to the moment the TUI would start."""
    started: dict = {}

    def run_tui(assistant, startup_problem=None, model=None, ask_passphrase=False):
        started.update(problem=startup_problem, ask=ask_passphrase, unlocked=assistant.key.unlocked)

    monkeypatch.setattr("tui.app.run_tui", run_tui)
    monkeypatch.setattr(sys, "stdin", _Terminal())
    cli.main(args=[], prog_name="lantern", standalone_mode=False)
    return started


def test_lantern_asks_on_the_passphrase_screen_unless_the_environment_unlocks(home, monkeypatch):
    monkeypatch.delenv("LANTERN_KEY_FILE", raising=False)
    _encrypt(PASSPHRASE)

    monkeypatch.delenv("LANTERN_PASSPHRASE", raising=False)
    assert _start_tui(monkeypatch) == {"problem": None, "ask": True, "unlocked": False}

    monkeypatch.setenv("LANTERN_PASSPHRASE", PASSPHRASE)
    assert _start_tui(monkeypatch) == {"problem": None, "ask": False, "unlocked": True}


def test_a_locked_home_without_a_terminal_is_one_clear_line(home, monkeypatch):
    monkeypatch.delenv("LANTERN_KEY_FILE", raising=False)
    monkeypatch.delenv("LANTERN_PASSPHRASE", raising=False)
    _encrypt(PASSPHRASE)

    result = run_lantern("ask", "What is the capital of France?", input=b"")
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert "locked" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by 'make test'")
def test_in_a_real_terminal_the_passphrase_is_typed_on_the_screen_and_never_shown(home, monkeypatch):
    monkeypatch.delenv("LANTERN_KEY_FILE", raising=False)
    _encrypt(PASSPHRASE)
    session = f"lantern-unlock-{uuid.uuid4().hex[:8]}"
    repo = Path(__file__).resolve().parents[1]  # this checkout's code, whatever is installed
    no_secret = "env -u LANTERN_PASSPHRASE -u LANTERN_KEY_FILE"
    command = (
        f"{no_secret} PYTHONPATH={shlex.quote(str(repo))} LANTERN_HOME={shlex.quote(str(home))} {LANTERN}"
    )
    start_in_terminal(session, command, 100, 30)
    try:
        wait_for_screen(session, "This data home is encrypted")
        tmux("send-keys", "-t", session, "-l", WRONG)
        tmux("send-keys", "-t", session, "Enter")
        refused = wait_for_screen(session, "wrong passphrase")
        tmux("send-keys", "-t", session, "-l", PASSPHRASE)
        typed = wait_for_screen(session, "•" * len(PASSPHRASE))  # masked, one dot a character
        tmux("send-keys", "-t", session, "Enter")
        wait_for_screen(session, "Chatting offline with smollm2-135m-instruct")
        tmux("send-keys", "-t", session, "C-q")
        assert wait_until_gone(session, 20), "Ctrl+Q did not quit"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert WRONG not in refused and PASSPHRASE not in typed
