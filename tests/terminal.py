"""Driving a real terminal with tmux, as a person at a keyboard would."""

from __future__ import annotations

import subprocess
import time


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def session_alive(session: str) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0


def wait_for_screen(session: str, text: str, timeout: float = 120) -> str:
    """The screen once ``text`` is on it; fails with the last screen after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text in screen:
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared; screen:\n{screen}")


def wait_until_gone(session: str, timeout: float = 30) -> bool:
    """True once the program in ``session`` has exited (tmux closes the session with it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and session_alive(session):
        time.sleep(0.2)
    return not session_alive(session)


def start_in_terminal(session: str, command: str, width: int, height: int) -> None:
    """Open a terminal of this size, then run ``command`` in it (``exec``: its exit ends the session).

    Starting the program only once the terminal exists avoids a race in which a full-screen app
    reads the size before tmux has applied it and paints only part of the screen."""
    tmux("new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), "sh")
    tmux("send-keys", "-t", session, "-l", f"exec {command}")
    tmux("send-keys", "-t", session, "Enter")


def wait_for_prompt(session: str, prompt: str, timeout: float = 120) -> str:
    """The screen once its last line is an empty ``prompt``: the program is ready for input."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if screen.rstrip().endswith(prompt.rstrip()):
            return screen
        time.sleep(0.3)
    raise AssertionError(f"no empty {prompt!r} prompt; screen:\n{screen}")
