"""`lantern chat`: the plain line chat, piped and in a real terminal (tmux) with input history."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import uuid

import pytest

from tests.conftest import LANTERN, run_lantern
from tests.terminal import tmux, wait_for_prompt, wait_for_screen, wait_until_gone


def test_piped_chat_answers_each_line_in_one_saved_conversation(home):
    lines = "What is the capital of France? Answer in one word.\n/id\nAnd of Italy?\n"
    result = run_lantern("chat", "--temperature", "0", "--max-tokens", "16", input=lines.encode())
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "Paris" in out and "Rome" in out
    listing = run_lantern("conversations", "list").stdout.decode().splitlines()
    assert len(listing) == 1 and "4 msgs" in listing[0]
    conversation_id = listing[0].split()[0]
    assert conversation_id in out  # /id printed it


def test_bad_utf8_on_a_chat_line_is_refused_and_the_chat_goes_on(home):
    lines = b"caf\xe9?\nWhat is the capital of France? Answer in one word.\n"
    result = run_lantern("chat", "--temperature", "0", "--max-tokens", "16", input=lines)
    assert result.returncode == 0
    assert b"not valid UTF-8" in result.stderr
    assert b"Paris" in result.stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by 'make test'")
def test_interactive_chat_in_a_terminal_keeps_input_history(home):
    session = f"lantern-{uuid.uuid4().hex[:8]}"
    command = f"LANTERN_HOME={shlex.quote(str(home))} {LANTERN} chat --temperature 0"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", command)
    try:
        wait_for_screen(session, "you>")
        tmux("send-keys", "-t", session, "What is the capital of France? One word.", "Enter")
        wait_for_screen(session, "Paris")
        wait_for_prompt(session, "you> ")  # the answer is complete and a new prompt waits
        tmux("send-keys", "-t", session, "Up")  # readline recalls the last question
        # The asked line already reads "you> What is ...": wait for the recalled copy below it.
        screen = wait_for_prompt(session, "you> What is the capital of France? One word.")
        assert screen.count("What is the capital of France? One word.") == 2
        tmux("send-keys", "-t", session, "C-u", "/exit", "Enter")
        assert wait_until_gone(session, 30), "/exit did not end the chat"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    history = (home / "chat_history").read_text()
    assert "What is the capital of France? One word." in history
    saved = json.loads(run_lantern("ask", "-c", "ok", "--max-tokens", "1", "--json").stdout)
    assert saved["usage"]["prompt_tokens"] > 30  # the terminal chat was saved and continued


def test_an_oversized_line_is_refused_and_the_chat_goes_on(home):
    lines = ("word " * 6000 + "\nWhat is the capital of France? Answer in one word.\n").encode()
    result = run_lantern("chat", "--temperature", "0", "--max-tokens", "16", input=lines)
    assert result.returncode == 0, result.stderr
    assert b"context window is 4096 tokens" in result.stderr
    assert b"Paris" in result.stdout
