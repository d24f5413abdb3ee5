"""`lantern` in a real terminal: started under tmux, a question typed, an answer read off the screen."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import uuid

import pytest

from tests.conftest import LANTERN
from tests.terminal import start_in_terminal, tmux, wait_for_screen, wait_until_gone


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by 'make test'")
@pytest.mark.parametrize("size", [("80", "24"), ("120", "40")])
def test_the_terminal_app_answers_a_typed_question(home, size):
    session = f"lantern-tui-{uuid.uuid4().hex[:8]}"
    (home / "config.toml").parent.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[generation]\ntemperature = 0.0\nmax_tokens = 24\n")
    command = f"env LANTERN_HOME={shlex.quote(str(home))} {LANTERN}"
    start_in_terminal(session, command, int(size[0]), int(size[1]))
    try:
        wait_for_screen(session, "Chatting offline with smollm2-135m-instruct")
        wait_for_screen(session, "context 0/")  # the model is loaded
        tmux("send-keys", "-t", session, "-l", "What is the capital of France? Answer in one word.")
        tmux("send-keys", "-t", session, "Enter")
        screen = wait_for_screen(session, "tok/s")
        assert "Paris" in screen
        tmux("send-keys", "-t", session, "C-q")
        assert wait_until_gone(session, 20), "Ctrl+Q did not quit"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by 'make test'")
def test_a_damaged_model_registry_opens_a_screen_that_says_what_to_do(home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.json").write_text("{ this is not json")
    session = f"lantern-tui-{uuid.uuid4().hex[:8]}"
    start_in_terminal(session, f"env LANTERN_HOME={shlex.quote(str(home))} {LANTERN}", 100, 30)
    try:
        screen = wait_for_screen(session, "Lantern cannot start")
        assert "models.json" in screen and "What to do" in screen
        tmux("send-keys", "-t", session, "q")
        assert wait_until_gone(session, 20)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
