"""A model served elsewhere, by any OpenAI-compatible engine, answers through Lantern as a local one
does: the real llama_cpp.server, started here on loopback with the bundled model, is the engine.

When the engine misbehaves (down, slow, a stream cut half way) a small Starlette app on loopback,
``FakeMisbehavingEngine``, stands in for it: those failures cannot be produced on demand with the
real server.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from app.chat_template import ChatMessage
from app.config import RemoteConfig
from app.conversations import ConversationStore
from app.decoding import GenerationSettings
from app.errors import LanternError
from app.model_store import RemoteModel
from app.remote_engine import EngineCutError, EngineUnavailableError, RemoteEngine
from tests.api_server import free_port
from tests.conftest import run_lantern
from tests.fake_engine import FakeMisbehavingEngine

GREEDY = GenerationSettings(max_tokens=24, temperature=0.0)
FRANCE = [ChatMessage("user", "What is the capital of France? Answer in one word.")]
SECRET = "sk-test-do-not-print-0123456789"


# -- the real engine (llama_cpp.server, tests/conftest.py's remote_engine_url) --------------------
def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_the_engine_s_window_is_the_configured_one_when_it_does_not_say(remote_engine):
    # llama_cpp.server reports no context length, so the configured 2048 is used.
    assert remote_engine.context_length == 2048
    assert remote_engine.model  # filled from the engine's /v1/models


def test_a_remote_model_is_registered_and_listed_with_its_url(home, remote_engine_url):
    """Asking, continuing and citing notes through it: tests/test_cli.py and test_memory_cli.py,
    parametrised over the local model and this one (the ``chat_model`` fixture)."""
    added = _ok(run_lantern("models", "add-remote", "r", remote_engine_url + "/v1/", "--context", "2048"))
    assert f"Added remote model r: {remote_engine_url}" in added
    listed = {m["name"]: m for m in json.loads(_ok(run_lantern("models", "list", "--json")))}
    assert listed["r"]["kind"] == "remote" and listed["r"]["url"] == remote_engine_url
    question = "What is the capital of France? Answer in one word."
    streamed = _ok(run_lantern("ask", question, "-m", "r", "--temperature", "0", "--max-tokens", "24"))
    assert "Paris" in streamed


# -- a misbehaving engine (tests/fake_engine.py) ---------------------------------------------
@pytest.fixture
def fake_engine() -> Iterator[FakeMisbehavingEngine]:
    fake = FakeMisbehavingEngine()
    yield fake
    fake.stop()


def _fake_remote(url: str, **config) -> RemoteEngine:
    return RemoteEngine(RemoteModel("fake", url, ""), RemoteConfig(**config))


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_well_behaved_engine_s_window_model_and_usage_are_read_from_it(fake_engine):
    engine = _fake_remote(fake_engine.url)
    assert engine.context_length == 1024 and engine.model == "fake-7b"
    result = engine.chat(FRANCE, GREEDY)
    assert result.text == "".join(FakeMisbehavingEngine.PIECES)
    assert (result.prompt_tokens, result.completion_tokens, result.finish_reason) == (11, 3, "stop")
    engine.close()


def test_an_engine_that_is_down_is_one_line_naming_its_url_after_retries(home):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    failed = run_lantern("models", "add-remote", "r", url)
    line = _one_error_line(failed)
    assert url in line and "not answering" in line and "4 tries" in line
    assert time.monotonic() - started > 1.7  # backoff 0.25 + 0.5 + 1 s

    _ok(run_lantern("models", "add-remote", "r", url, "--no-check"))
    line = _one_error_line(run_lantern("ask", "Hello?", "--model", "r"))
    assert url in line and "is it running?" in line


def test_a_busy_engine_is_retried_before_anything_streamed():
    fake = FakeMisbehavingEngine(mode="busy")
    try:
        engine = _fake_remote(fake.url, retries=2)
        with pytest.raises(EngineUnavailableError, match="HTTP 503, 3 tries"):
            engine.chat(FRANCE, GREEDY)
        assert fake.chat_requests == 3
        fake.mode = "ok"
        assert engine.chat(FRANCE, GREEDY).text  # the engine is usable again once the server is
        engine.close()
    finally:
        fake.stop()


def test_a_slow_engine_fails_after_the_configured_timeout():
    fake = FakeMisbehavingEngine(mode="slow", delay=6)
    try:
        engine = _fake_remote(fake.url, timeout_s=1)
        started = time.monotonic()
        with pytest.raises(EngineUnavailableError, match=r"sent nothing for 1 s; raise \[remote\] timeout_s"):
            engine.chat(FRANCE, GREEDY)
        assert time.monotonic() - started < 4
        assert fake.chat_requests == 1  # a slow engine is not asked again: that would double the wait
        engine.close()
    finally:
        fake.stop()


def test_a_stream_cut_half_way_keeps_the_partial_answer_marked_as_cut(home):
    fake = FakeMisbehavingEngine(mode="cut")
    try:
        _ok(run_lantern("models", "add-remote", "r", fake.url))
        cut = run_lantern("ask", "Who kept the lighthouse?", "--model", "r")
        line = _one_error_line(cut)
        assert fake.url in line and "broke off the answer" in line and "kept, marked as cut" in line
        partial = "".join(FakeMisbehavingEngine.PIECES)
        assert cut.stdout.decode() == partial + "\n[cut]\n"

        store = ConversationStore(home / "conversations.sqlite3")
        conversation = store.latest()
        store.close()
        answer = conversation.messages[-1]
        assert (answer.content, answer.finish, answer.is_cut) == (partial, "cut", True)
        shown = _ok(run_lantern("conversations", "show", conversation.id))
        assert shown.rstrip().endswith(partial + "\n[cut]")
    finally:
        fake.stop()


def test_a_stalled_stream_is_cut_after_the_timeout_and_cancel_ends_a_blocked_read_at_once():
    fake = FakeMisbehavingEngine(mode="stall", delay=5)
    try:
        engine = _fake_remote(fake.url, timeout_s=1)
        stream = engine.stream_chat(FRANCE, GREEDY)
        pieces = []
        with pytest.raises(EngineCutError, match="nothing more for 1 s"):
            for piece in stream:
                pieces.append(piece)
        assert pieces == [FakeMisbehavingEngine.PIECES[0]]
        assert (stream.result.text, stream.result.finish_reason) == (pieces[0], "cut")

        patient = _fake_remote(fake.url, timeout_s=30)
        stream = patient.stream_chat(FRANCE, GREEDY)
        iterator = iter(stream)
        next(iterator)
        threading.Timer(0.3, stream.cancel).start()  # as the TUI's Stop button does, from another thread
        started = time.monotonic()
        assert list(iterator) == []
        assert time.monotonic() - started < 2
        assert stream.result.finish_reason == "cancelled"
        engine.close()
        patient.close()
    finally:
        fake.stop()


def test_the_api_key_is_sent_from_its_variable_and_never_stored_or_printed(home, monkeypatch):
    fake = FakeMisbehavingEngine(key=SECRET)
    try:
        monkeypatch.setenv("FAKE_KEY", SECRET)
        _ok(run_lantern("models", "add-remote", "r", fake.url, "--api-key-env", "FAKE_KEY"))
        assert SECRET not in (home / "models.json").read_text()
        assert "FAKE_KEY" in (home / "models.json").read_text()
        answered = run_lantern("ask", "Hello?", "--model", "r")
        assert _ok(answered).startswith("The lighthouse")
        assert fake.authorizations[-1] == f"Bearer {SECRET}"
        assert "key $FAKE_KEY (set)" in _ok(run_lantern("models", "list"))

        monkeypatch.setenv("FAKE_KEY", "a-wrong-key")
        line = _one_error_line(run_lantern("ask", "Hello?", "--model", "r"))
        assert "HTTP 401" in line and "$FAKE_KEY" in line and "a-wrong-key" not in line

        monkeypatch.delenv("FAKE_KEY")
        line = _one_error_line(run_lantern("ask", "Hello?", "--model", "r"))
        assert line == "Error: model 'r' needs its API key in $FAKE_KEY; set that variable"
    finally:
        fake.stop()


def test_a_remote_model_is_listed_described_and_removed_and_gguf_commands_refuse_it(home, fake_engine):
    _ok(run_lantern("models", "add-remote", "big", fake_engine.url + "/v1", "--context", "512"))
    listed = _ok(run_lantern("models", "list"))
    assert "big" in listed and "remote" in listed and fake_engine.url in listed and "fake-7b" in listed
    info = _ok(run_lantern("models", "info", "big", "--check"))
    assert "512 tokens (engine answered)" in info  # the smaller of the engine's 1024 and the configured 512
    speculative = run_lantern("ask", "Hi", "--model", "big", "--speculative", "prompt-lookup")
    assert "--speculative prompt-lookup runs in the local engine" in _one_error_line(speculative)
    again = run_lantern("models", "add-remote", "big", fake_engine.url)
    assert "already exists" in _one_error_line(again)
    refused = run_lantern("moe", "stats", "big", "--text", "notes.txt")
    line = _one_error_line(refused)
    assert line == f"Error: model 'big' is remote ({fake_engine.url}); this needs a local GGUF model"
    assert _ok(run_lantern("models", "rm", "big")).strip() == "Removed big."
    assert "big" not in _ok(run_lantern("models", "list"))


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate it signed for 127.0.0.1: (CA file, certificate, key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lantern test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "engine.pem", folder / "engine.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file


def test_tls_is_verified_and_a_private_ca_is_trusted_only_when_given(home, tmp_path):
    ca_file, cert_file, key_file = _certificates(tmp_path)
    fake = FakeMisbehavingEngine(tls=(cert_file, key_file))
    try:
        line = _one_error_line(run_lantern("models", "add-remote", "r", fake.url))
        assert fake.url in line and "failed TLS verification" in line and "--ca-bundle" in line
        _ok(run_lantern("models", "add-remote", "r", fake.url, "--ca-bundle", str(ca_file)))
        assert _ok(run_lantern("ask", "Hello?", "--model", "r")).startswith("The lighthouse")
        assert f"verified with {ca_file}" in _ok(run_lantern("models", "info", "r"))
    finally:
        fake.stop()


def test_a_url_that_is_not_http_is_refused(home):
    line = _one_error_line(run_lantern("models", "add-remote", "r", "ftp://example.org"))
    assert "not an http:// or https:// URL" in line


def test_an_engine_error_raises_before_any_text(fake_engine):
    engine = _fake_remote(fake_engine.url)
    fake_engine.key = "needed-now"
    with pytest.raises(LanternError, match="HTTP 401"):
        engine.chat(FRANCE, GREEDY)
    engine.close()


def test_answers_saved_before_the_finish_column_open_with_none(tmp_path):
    import sqlite3

    from app.conversations import MIGRATIONS

    path = tmp_path / "conversations.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    for number, migration in enumerate(MIGRATIONS[:3]):
        old.executescript(f"BEGIN; {migration} PRAGMA user_version = {number + 1}; COMMIT;")
    old.execute("INSERT INTO conversations VALUES ('c1', 't', 'm', '', 'now', 'now')")
    for role, content in (("user", "q"), ("assistant", "a")):
        old.execute(
            "INSERT INTO messages (conversation_id, role, content, created_at) VALUES ('c1', ?, ?, 'now')",
            (role, content),
        )
    old.close()
    store = ConversationStore(path)
    answer = store.get("c1").messages[-1]
    assert (answer.content, answer.finish, answer.is_cut) == ("a", None, False)
    store.record_exchange(store.get("c1"), "m", "", "q2", "a2 partial", finish="cut")
    assert store.get("c1").messages[-1].is_cut
    store.close()
