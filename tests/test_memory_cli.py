"""The memory as a user drives it from the shell: add, search, ask with citations, encryption,
and a `memory add` killed with SIGKILL half way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from app.home_key import HomeKey
from rag.retrieval import Retriever
from rag.store import MemoryStore
from tests.conftest import LANTERN, run_lantern
from tests.memory_fixtures import make_notes


@pytest.fixture
def notes(tmp_path):
    return make_notes(tmp_path / "notes")


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_add_then_search_as_json_and_as_a_batch_of_queries(home, notes, tmp_path):
    out = _ok(run_lantern("memory", "add", str(notes)))
    assert "6 added" in out and "2 skipped (unsupported type)" in out and "3 skipped (unreadable)" in out

    hits = json.loads(
        _ok(run_lantern("memory", "search", "what is the lighthouse built from", "--json", "--k", "3"))
    )
    assert len(hits) == 3
    assert set(hits[0]) == {"source", "heading", "text", "score"}
    assert hits[0]["source"] == "travel/trip.md" and hits[0]["heading"] == "Brittany › Lighthouses"

    queries = tmp_path / "queries.txt"
    queries.write_text("who services the boiler\n\nhow is the starter fed\n", encoding="utf-8")
    lines = _ok(run_lantern("memory", "search", "--queries", str(queries), "--k", "2")).splitlines()
    answers = [json.loads(line) for line in lines]
    assert [a["query"] for a in answers] == ["who services the boiler", "how is the starter fed"]
    assert answers[0]["hits"][0]["source"] == "home/scan.pdf"
    assert answers[1]["hits"][0]["source"] == "home/recipes.html"

    listing = _ok(run_lantern("memory", "list"))
    assert str(notes) in listing and "6 files" in listing
    stats = json.loads(_ok(run_lantern("memory", "stats", "--json")))
    assert stats["chunks"] >= 7 and stats["index"]["kind"] == "exact" and stats["encrypted"] is False


def test_ask_answers_from_notes_and_cites_them(home, notes, chat_model):
    _ok(run_lantern("memory", "add", str(notes)))
    out = _ok(
        run_lantern("ask", "Who services the boiler, and when?", "--temperature", "0", "--max-tokens", "48")
    )
    answer, _, sources = out.partition("Sources:")
    assert "Okafor" in answer
    assert "home/scan.pdf › page 1" in sources

    as_json = json.loads(_ok(run_lantern("ask", "Who services the boiler?", "--json", "--max-tokens", "8")))
    assert as_json["citations"][0]["source"] == "home/scan.pdf" and as_json["model"] == chat_model

    plain = _ok(run_lantern("ask", "Who services the boiler?", "--no-memory", "--max-tokens", "8"))
    assert "Sources:" not in plain


def test_encrypted_memory_from_the_shell(home, notes, monkeypatch):
    monkeypatch.setenv("LANTERN_PASSPHRASE", "a long passphrase for tests")
    _ok(run_lantern("memory", "init", "--encrypt"))
    _ok(run_lantern("memory", "add", str(notes / "travel")))
    assert json.loads(_ok(run_lantern("memory", "search", "lighthouse", "--json")))[0]["source"] == "trip.md"

    monkeypatch.setenv("LANTERN_PASSPHRASE", "a wrong guess")
    wrong = run_lantern("memory", "search", "lighthouse")
    assert wrong.returncode == 1
    assert wrong.stderr.decode().strip().splitlines() == [
        "Error: wrong passphrase or key file for this data home; nothing was opened "
        "(type it again, or check LANTERN_PASSPHRASE / --key-file)"
    ]

    monkeypatch.delenv("LANTERN_PASSPHRASE")
    locked = run_lantern("ask", "Where is the lighthouse?", "--max-tokens", "4")
    assert locked.returncode == 1 and "LANTERN_PASSPHRASE" in locked.stderr.decode()
    assert "Traceback" not in locked.stderr.decode()
    # The conversations are sealed too: a locked home answers nothing, memory or not.
    without_memory = run_lantern("ask", "Say hi.", "--no-memory", "--max-tokens", "4")
    assert without_memory.returncode == 1 and len(without_memory.stderr.decode().strip().splitlines()) == 1


def _texts(store: MemoryStore) -> list[str]:
    return [store.chunk(i).text for entry in store.files.values() for i in entry.chunk_ids]


def test_a_forgotten_note_leaves_memory_and_sync_does_not_bring_it_back(home, notes):
    trip = notes / "travel" / "trip.md"
    _ok(run_lantern("memory", "add", str(notes)))
    assert _ok(run_lantern("memory", "forget", str(trip))).strip() == f"Forgot 1 file under {trip}."
    assert "0 removed" in _ok(run_lantern("memory", "sync"))  # the note is still on disk, not re-added

    store = MemoryStore.open(home / "memory")
    assert str(trip) not in store.files and len(store.files) == 5
    assert not any("granite" in text for text in _texts(store))
    assert len(store.dense) == store.chunk_count  # its vectors went with its passages
    listing = _ok(run_lantern("memory", "list"))
    assert f"{trip}  (forgotten;" in listing and "5 files" in listing


def test_a_remembered_chat_is_found_by_memory_search(home, embedder):
    question = "My locker code at the pool is 4417. Say OK."
    asked = json.loads(_ok(run_lantern("ask", question, "--json", "--max-tokens", "4")))
    conversation = asked["conversation_id"]
    out = _ok(run_lantern("memory", "remember-chat", conversation))
    assert out.startswith(f"Remembered conversation {conversation} (")

    [hit] = Retriever(MemoryStore.open(home / "memory"), embedder).search("locker code at the pool", 1)
    assert hit.source == f"conversations/{conversation}.md"
    assert question in hit.text
    assert " ".join(asked["text"].split()) in " ".join(hit.text.split())  # the answer too

    unknown = run_lantern("memory", "remember-chat", "no-such-conversation")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr.decode()


def test_a_key_file_encrypts_the_memory_and_unlocks_it(home, notes, tmp_path, monkeypatch):
    short = tmp_path / "short.key"
    short.write_bytes(b"too short")
    refused = run_lantern("memory", "init", "--encrypt", "--key-file", str(short))
    assert refused.returncode == 1 and "too short" in refused.stderr.decode()
    assert not MemoryStore.is_encrypted(home / "memory")

    key = tmp_path / "memory.key"
    key.write_bytes(bytes(range(64)))
    _ok(run_lantern("memory", "init", "--encrypt", "--key-file", str(key)))
    monkeypatch.setenv("LANTERN_KEY_FILE", str(key))
    _ok(run_lantern("memory", "add", str(notes / "travel")))
    for stored in (home / "memory").iterdir():
        assert b"granite" not in stored.read_bytes(), stored  # sealed at rest
    assert any(
        "granite" in text for text in _texts(MemoryStore.open(home / "memory", HomeKey(home, key.read_bytes)))
    )

    other = tmp_path / "other.key"
    other.write_bytes(bytes(range(1, 65)))
    monkeypatch.setenv("LANTERN_KEY_FILE", str(other))
    wrong = run_lantern("memory", "search", "lighthouse")
    assert wrong.returncode == 1 and "wrong passphrase or key file" in wrong.stderr.decode()
    monkeypatch.delenv("LANTERN_KEY_FILE")
    locked = run_lantern("memory", "search", "lighthouse")
    assert locked.returncode == 1 and "LANTERN_KEY_FILE" in locked.stderr.decode()


def test_memory_add_of_a_missing_path_is_one_clear_line(home, tmp_path):
    result = run_lantern("memory", "add", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stderr.decode().strip() == f"Error: {tmp_path / 'nope'} does not exist"


NOTES = 900  # enough that embedding outlasts the first committed batch by many seconds


def test_sigkill_during_memory_add_leaves_a_store_that_opens_and_sync_finishes(home, tmp_path):
    notes = tmp_path / "many"
    notes.mkdir()
    for n in range(NOTES):  # three sections, so three chunks, each
        sections = "\n\n".join(
            f"## Reading {p}\n\nThe reading of meter {n * 7 + p} was taken at dawn on day {n}."
            for p in range(3)
        )
        (notes / f"note-{n:03}.md").write_text(f"# Note {n}\n\n{sections}\n", encoding="utf-8")
    env = {**os.environ, "LANTERN_MEMORY_COMMIT_SECONDS": "0"}
    process = subprocess.Popen(
        [str(LANTERN), "memory", "add", str(notes)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    directory = home / "memory"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if MemoryStore.exists(directory) and MemoryStore.open(directory).chunk_count > 0:
            break  # one batch is committed and the rest is being embedded
        time.sleep(0.2)
    assert process.poll() is None, "memory add finished before it could be interrupted; add more notes"
    process.send_signal(signal.SIGKILL)
    process.wait()

    store = MemoryStore.open(directory)
    partial = store.chunk_count
    assert 0 < partial < NOTES * 3  # some, not all
    hits = json.loads(_ok(run_lantern("memory", "search", "reading of meter 17", "--json", "--k", "10")))
    for hit in hits:  # every hit is a real chunk of a real note
        assert (notes / hit["source"]).is_file() and hit["text"] in (notes / hit["source"]).read_text()

    out = _ok(run_lantern("memory", "sync"))
    assert "0 removed" in out
    final = MemoryStore.open(directory)
    assert len(final.files) == NOTES and final.chunk_count == NOTES * 3
    assert len(final.dense) == final.chunk_count == len(final.lexical)
    leftovers = [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
