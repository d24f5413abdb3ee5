"""An encrypted data home: after `lantern init --encrypt`, nothing the notes touch lies on disk in
plain form — memory, conversations (CLI and phone), ratings, input history — and every way in
(passphrase, key file, a changed passphrase, a server started with a key file) behaves."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from app.home_key import HomeKey
from app.private_files import read_private
from rag.errors import TamperedFileError
from tests.api_server import free_port
from tests.conftest import LANTERN
from tests.memory_fixtures import FACTS, make_notes
from tests.terminal import start_in_terminal, tmux, wait_for_prompt, wait_until_gone

PASSPHRASE = "correct horse battery staple"
# Said in the chats, so that the conversations and the input history hold the notes' words.
QUOTED = FACTS["trip.md"]
SECRETS = [FACTS["trip.md"], FACTS["garden.org"], FACTS["scan.pdf"], "Tomatoes on the balcony"]


def lantern(
    home: Path, *args: str, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "LANTERN_HOME": str(home), **(env or {})}
    return subprocess.run(
        [str(LANTERN), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        stdin=subprocess.DEVNULL,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def forms(sentence: str) -> list[bytes]:
    """A sentence as it could lie on disk: UTF-8, UTF-16 (both byte orders), base64 of UTF-8."""
    raw = sentence.encode("utf-8")
    return [
        raw,
        sentence.encode("utf-16-le"),
        sentence.encode("utf-16-be"),
        base64.b64encode(raw)[:-4],  # without the tail, which depends on what follows
    ]


def plain_traces(*folders: Path) -> list[str]:
    """Every file under ``folders`` that holds any form of any of the notes' sentences."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                for sentence in SECRETS:
                    if any(form in data for form in forms(sentence)):
                        found.append(f"{path}: {sentence!r}")
    return found


def chat_in_a_terminal(home: Path, env: dict, question: str) -> None:
    """`lantern chat` at a real terminal (tmux), so its input history is written as a user's is."""
    session = f"lantern-sealed-{os.getpid()}"
    exports = " ".join(f"{k}='{v}'" for k, v in {**env, "LANTERN_HOME": str(home)}.items())
    start_in_terminal(session, f"env {exports} {LANTERN} chat --max-tokens 8", 100, 30)
    try:
        wait_for_prompt(session, "you>", timeout=180)
        tmux("send-keys", "-t", session, "-l", question)
        tmux("send-keys", "-t", session, "Enter")
        wait_for_prompt(session, "you>", timeout=180)
        tmux("send-keys", "-t", session, "-l", "/exit")
        tmux("send-keys", "-t", session, "Enter")
        assert wait_until_gone(session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


class Serve:
    """`lantern serve --key-file` as a subprocess: nothing in its environment or stdin unlocks."""

    def __init__(self, home: Path, key_file: Path, env: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, **env, "LANTERN_HOME": str(home)}
        environment.pop("LANTERN_PASSPHRASE", None)
        self.process = subprocess.Popen(
            [str(LANTERN), "serve", "--key-file", str(key_file), "--port", str(self.port)],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read().decode()
            try:
                if httpx.get(self.url + "/v1/lantern/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("lantern serve did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def lived_in(tmp_path_factory):
    """A home that chatted in plain form first, was then encrypted, and lived on: notes added, a
    chat in the CLI and at a terminal, a phone's chat over `serve --key-file` and its rating."""
    base = tmp_path_factory.mktemp("sealed")
    home, scratch = base / "home", base / "tmp"
    scratch.mkdir()
    notes = make_notes(base / "notes")
    env = {"TMPDIR": str(scratch), "LANTERN_PASSPHRASE": PASSPHRASE}
    key_file = base / "phone-server.key"

    ok(lantern(home, "memory", "add", str(notes / "travel"), env={"TMPDIR": str(scratch)}))
    ok(lantern(home, "ask", "--max-tokens", "8", f"Is this right? {QUOTED}", env={"TMPDIR": str(scratch)}))
    sealed = ok(lantern(home, "init", "--encrypt", env=env))
    assert "sealed conversations.sqlite3" in sealed and "sealed memory" in sealed

    ok(lantern(home, "memory", "add", str(notes), env=env))
    ok(lantern(home, "ask", "--max-tokens", "8", f"{FACTS['garden.org']} How many hours?", env=env))
    chat_in_a_terminal(home, env, f"Remember: {FACTS['garden.org']}")

    # The server gets a key file: it becomes the home's secret, so the phone never needs one.
    key_file.write_bytes(os.urandom(32))
    ok(lantern(home, "passphrase", "change", "--new-key-file", str(key_file), env=env))
    token = json.loads(ok(lantern(home, "pair", "phone", "--json", env={"TMPDIR": str(scratch)})))["token"]
    server = Serve(home, key_file, {"TMPDIR": str(scratch)})
    try:
        client = OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": f"Who services the boiler? {FACTS['scan.pdf']}"}],
            max_tokens=12,
            temperature=0,
            extra_body={"lantern": {"memory": True}},
        )
        extra = reply.model_extra["lantern"]
        assert extra["citations"], "the phone's answer cites the sealed memory"
        rated = httpx.post(
            server.url + "/v1/lantern/feedback",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "conversation_id": extra["conversation_id"],
                "message_id": extra["message_id"],
                "rating": -1,
                "edited": f"Mr Okafor. {FACTS['scan.pdf']}",
            },
        )
        assert rated.status_code == 201, rated.text
    finally:
        server.stop()
    return home, scratch, key_file, extra["conversation_id"]


def test_nothing_of_the_notes_lies_in_plain_form_in_the_home_or_the_temporary_directory(lived_in):
    home, scratch, key_file, phone_conversation = lived_in
    assert (home / "chat_history").exists() and (home / "conversations.sqlite3").exists()
    assert plain_traces(home, scratch) == []

    # ... and everything is still there for the owner: chats from before and after, the phone's.
    listed = ok(lantern(home, "--key-file", str(key_file), "conversations"))
    titles = [line.split("msgs  ", 1)[1] for line in listed.splitlines()]
    assert phone_conversation in listed and len(titles) == 4
    assert {title.split(" ", 1)[0] for title in titles} == {"Is", "Tomatoes", "Remember:", "Who"}
    key = HomeKey(home, key_file.read_bytes)
    history = read_private(home / "chat_history", key.cipher()).decode()
    assert FACTS["garden.org"] in history
    found = json.loads(ok(lantern(home, "--key-file", str(key_file), "memory", "search", "boiler", "--json")))
    assert found[0]["source"] == "home/scan.pdf"


def test_a_wrong_passphrase_is_one_clear_line_and_opens_nothing(lived_in, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(lived_in[0], home)
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    for command in (["conversations"], ["memory", "search", "boiler"], ["ask", "--no-memory", "hi"]):
        refused = lantern(home, *command, env={"LANTERN_PASSPHRASE": "a guess"})
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            "Error: wrong passphrase or key file for this data home; nothing was opened "
            "(type it again, or check LANTERN_PASSPHRASE / --key-file)"
        ]
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "sealed_file", ["conversations.sqlite3", "keyring.json", "memory/manifest.lmem", "memory/chunks-*.lmem"]
)
def test_a_flipped_byte_in_a_sealed_file_is_named(lived_in, tmp_path, sealed_file):
    home = tmp_path / "home"
    shutil.copytree(lived_in[0], home)
    key_file = lived_in[2]
    target = next(home.glob(sealed_file))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))
    command = ["conversations"] if target.suffix == ".sqlite3" else ["memory", "search", "boiler"]
    refused = lantern(home, "--key-file", str(key_file), *command)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert str(target) in refused.stderr and "damaged or was altered" in refused.stderr


def test_a_flipped_byte_in_the_input_history_is_named(lived_in, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(lived_in[0], home)
    history = home / "chat_history"
    data = bytearray(history.read_bytes())
    data[-3] ^= 0x01
    history.write_bytes(bytes(data))
    with pytest.raises(TamperedFileError, match=str(history)):
        read_private(history, HomeKey(home, lived_in[2].read_bytes).cipher())


def test_a_changed_passphrase_refuses_the_old_one_and_accepts_the_new(lived_in, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(lived_in[0], home)
    key_file = lived_in[2]
    sealed_before = (home / "conversations.sqlite3").read_bytes()
    changed = lantern(
        home, "passphrase", "change", "--key-file", str(key_file), env={"LANTERN_NEW_PASSPHRASE": "new words"}
    )
    assert ok(changed).strip() == "The passphrase is changed; the old one no longer opens this data home."
    assert (home / "conversations.sqlite3").read_bytes() == sealed_before  # re-wrapped, not re-encrypted
    assert lantern(home, "--key-file", str(key_file), "conversations").returncode == 1
    assert lived_in[3] in ok(lantern(home, "conversations", env={"LANTERN_PASSPHRASE": "new words"}))


@pytest.fixture(scope="module")
def plain_home(tmp_path_factory):
    """A home used for a while without encryption: notes, two conversations, an input history."""
    base = tmp_path_factory.mktemp("plain")
    home = base / "home"
    ok(lantern(home, "memory", "add", str(make_notes(base / "notes"))))
    ok(lantern(home, "ask", "--max-tokens", "4", "--no-memory", f"First: {QUOTED}"))
    ok(lantern(home, "ask", "--max-tokens", "4", "--no-memory", f"Second: {FACTS['garden.org']}"))
    (home / "chat_history").write_text(f"{FACTS['scan.pdf']}\n")  # as `lantern chat` left it
    return home


@pytest.mark.parametrize("lines_before_the_kill", [0, 1, 2, 3])
def test_init_encrypt_killed_at_any_step_is_finished_by_the_next_start(
    plain_home, tmp_path, lines_before_the_kill
):
    """SIGKILL while `init --encrypt` seals the home (after it printed 0..3 of its steps); the
    next command that unlocks the home finishes the sealing, and nothing is lost."""
    home = tmp_path / "home"
    shutil.copytree(plain_home, home)
    env = {**os.environ, "LANTERN_HOME": str(home), "LANTERN_PASSPHRASE": PASSPHRASE}
    sealing = subprocess.Popen(
        [str(LANTERN), "init", "--encrypt"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    if lines_before_the_kill == 0:
        while not (home / "keyring.json.pending").exists() and sealing.poll() is None:
            time.sleep(0.001)
    for _ in range(lines_before_the_kill):
        sealing.stdout.readline()
    sealing.kill()
    sealing.wait()

    listed = ok(lantern(home, "conversations", env={"LANTERN_PASSPHRASE": PASSPHRASE}))
    assert "First:" in listed and "Second:" in listed
    assert (home / "keyring.json").exists() and not (home / "keyring.json.pending").exists()
    found = json.loads(
        ok(lantern(home, "memory", "search", "boiler", "--json", env={"LANTERN_PASSPHRASE": PASSPHRASE}))
    )
    assert found[0]["source"] == "home/scan.pdf"
    history = read_private(home / "chat_history", HomeKey(home, PASSPHRASE.encode).cipher())
    assert history.decode() == f"{FACTS['scan.pdf']}\n"
    assert plain_traces(home) == []


def test_init_encrypt_refuses_while_another_lantern_uses_the_home(plain_home, tmp_path):
    """The TUI or `serve` holding the database open would go on writing into the replaced plain
    file: sealing waits until the home is free, and says so."""
    from app.assistant import Assistant
    from app.sealing import encrypt_home

    home = tmp_path / "home"
    shutil.copytree(plain_home, home)
    tui = Assistant(home)
    tui.conversations.list()
    try:
        refused = lantern(home, "init", "--encrypt", env={"LANTERN_PASSPHRASE": PASSPHRASE})
        assert refused.returncode == 1
        assert "another Lantern" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert not (home / "keyring.json").exists() and not (home / "keyring.json.pending").exists()
    finally:
        tui.close()
    assert "sealed conversations.sqlite3" in ok(
        lantern(home, "init", "--encrypt", env={"LANTERN_PASSPHRASE": PASSPHRASE})
    )
    owner = Assistant(home)
    with pytest.raises(Exception, match="already encrypted"):
        encrypt_home(owner, PASSPHRASE.encode())
    owner.close()
