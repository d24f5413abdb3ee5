"""`lantern memory tune`, as the keeper of a diary full of nicknames uses it: the embedder learns
the notes' own shorthand and is adopted because it finds the held-out notes' passages better; an
encrypted memory keeps the tuned weights sealed; a rollback goes back to the stock embedder; and a
tune killed half way leaves the old embedder in use."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from app.config import MemoryConfig
from app.home_key import HomeKey
from app.memory import Memory
from rag.embedder import SentenceTransformerEmbedder
from rag.store import MemoryStore, contextual_text
from tests.conftest import LANTERN, run_lantern
from tests.memory_fixtures import make_owner_notes

STOCK = "all-MiniLM-L6-v2"
# Bounds for a hung run, not speed checks: a tune trains on the CPU, which tests may share.
TUNE_TIMEOUT = 1800
tuning = pytest.mark.timeout(2400)
PASSPHRASE = "a long passphrase for tests"
QUERY = "Whisper › Repairs"  # the owner's name for the bicycle, and a heading of theirs


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def _embedder_in_use(home, embedder: SentenceTransformerEmbedder, passphrase: str = "") -> str:
    """Which embedder a search goes through: its similarity must be the one that embedder's own
    query and passage vectors give (and not the other embedder's)."""
    key = HomeKey(home, lambda: passphrase.encode())
    memory = Memory(home / "memory", MemoryConfig(), key, embedder)
    [hit] = memory.search(QUERY, k=1, mode="dense")
    store = MemoryStore.open(home / "memory", key).load()
    chunk = store.chunk(hit.chunk_id)
    passage = contextual_text(store.files[chunk.path].relative, chunk.headings, chunk.text)
    candidates = [embedder]
    if store.embedder_weights:
        candidates.append(embedder.with_weights(store.read_embedder_weights(), store.embedder_name))
    agreeing = []
    for candidate in candidates:
        query_vector, passage_vector = candidate.embed([QUERY, passage])
        if abs(float(query_vector @ passage_vector) - hit.similarity) < 1e-4:
            agreeing.append(candidate.name)
    assert len(agreeing) == 1, agreeing
    return agreeing[0]


@tuning
def test_tune_learns_the_notes_shorthand_survives_encryption_and_rolls_back(
    home, embedder, tmp_path, monkeypatch
):
    notes = make_owner_notes(tmp_path / "diary")
    _ok(run_lantern("memory", "add", str(notes)))

    report = json.loads(_ok(run_lantern("memory", "tune", "--json", timeout=TUNE_TIMEOUT)))
    assert report["held_out_notes"] >= 5 and report["pairs"] > report["held_out_pairs"] > 20
    assert report["after"]["mrr"] > report["before"]["mrr"]  # on pairs of notes it never trained on
    assert report["adopted"] and report["embedder"].startswith(STOCK + "+tuned-")
    directory = home / "memory"
    assert report["reencoded"] == MemoryStore.open(directory).chunk_count
    assert json.loads(_ok(run_lantern("memory", "stats", "--json")))["embedder"] == report["embedder"]
    assert _embedder_in_use(home, embedder) == report["embedder"]
    [weights] = directory.glob("embedder-*.lmem")

    # Encrypting it later seals the tuned weights too, and they still load.
    assert b'"dtype"' in weights.read_bytes()  # a plain memory: plain safetensors, checksummed
    monkeypatch.setenv("LANTERN_PASSPHRASE", PASSPHRASE)
    _ok(run_lantern("memory", "init", "--encrypt"))
    [sealed] = directory.glob("embedder-*.lmem")
    assert sealed != weights and not weights.exists()
    assert b'"dtype"' not in sealed.read_bytes()  # no readable safetensors header
    assert _embedder_in_use(home, embedder, PASSPHRASE) == report["embedder"]

    out = _ok(run_lantern("memory", "tune", "--rollback"))
    assert out.strip() == f"Rolled back: {report['reencoded']} passages re-encoded with {STOCK}."
    assert json.loads(_ok(run_lantern("memory", "stats", "--json")))["embedder"] == STOCK
    assert list(directory.glob("embedder-*")) == []
    assert _embedder_in_use(home, embedder, PASSPHRASE) == STOCK
    hits = json.loads(_ok(run_lantern("memory", "search", "the bicycle chain", "--json")))
    assert "bicycle" in hits[0]["text"]

    again = run_lantern("memory", "tune", "--rollback")
    assert again.returncode == 1
    assert again.stderr.decode().strip() == (
        f"Error: the memory uses {STOCK}, not a tuned one; nothing to roll back"
    )


@tuning
def test_a_tuned_encrypted_memory_opens_with_the_passphrase_only(home, embedder, tmp_path, monkeypatch):
    monkeypatch.setenv("LANTERN_PASSPHRASE", PASSPHRASE)
    _ok(run_lantern("memory", "init", "--encrypt"))
    _ok(run_lantern("memory", "add", str(make_owner_notes(tmp_path / "diary"))))

    out = _ok(run_lantern("memory", "tune", timeout=TUNE_TIMEOUT))
    assert "Held-out MRR@10: " in out and "Adopted: " in out
    [weights] = (home / "memory").glob("embedder-*.lmem")
    sealed = weights.read_bytes()
    assert b'"dtype"' not in sealed and b"word_embeddings" not in sealed

    tuned = json.loads(_ok(run_lantern("memory", "stats", "--json")))["embedder"]
    assert tuned.startswith(STOCK + "+tuned-")
    assert _embedder_in_use(home, embedder, PASSPHRASE) == tuned
    assert json.loads(_ok(run_lantern("memory", "search", "Marigold", "--json")))

    monkeypatch.delenv("LANTERN_PASSPHRASE")
    locked = run_lantern("memory", "search", "Marigold")
    assert locked.returncode == 1 and "LANTERN_PASSPHRASE" in locked.stderr.decode()
    assert len(locked.stderr.decode().strip().splitlines()) == 1
    monkeypatch.setenv("LANTERN_PASSPHRASE", "a wrong guess")
    wrong = run_lantern("memory", "tune", "--rollback")
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr.decode()
    with pytest.raises(Exception, match="wrong passphrase"):
        _embedder_in_use(home, embedder, "a wrong guess")


def test_a_tune_killed_while_training_leaves_the_old_embedder_in_use(home, embedder, tmp_path):
    _ok(run_lantern("memory", "add", str(make_owner_notes(tmp_path / "diary"))))
    before = _ok(run_lantern("memory", "search", QUERY, "--json"))

    tune = subprocess.Popen(
        [str(LANTERN), "memory", "tune"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ
    )
    assert tune.stderr is not None
    for line in tune.stderr:
        if line.startswith(b"Training step 1/"):
            break  # training has started and nothing is adopted yet
    assert tune.poll() is None, "the tune ended before it could be interrupted"
    tune.send_signal(signal.SIGKILL)
    tune.wait()

    assert json.loads(_ok(run_lantern("memory", "stats", "--json")))["embedder"] == STOCK
    assert _ok(run_lantern("memory", "search", QUERY, "--json")) == before
    assert _embedder_in_use(home, embedder) == STOCK
    assert [p.name for p in (home / "memory").iterdir() if p.name.startswith("embedder-")] == []


def test_pairs_come_from_what_each_note_says_and_held_out_notes_stay_out_of_training():
    from rag.store import Chunk
    from rag.tuning import make_pairs, split_by_note

    first = "The tiller of the boat was cracked near the pivot."
    rest = "It was glued with epoxy and clamped overnight in the warm kitchen."
    text = f"{first} {rest}"
    chunks = [(Chunk(0, "/n/boat.md", ("Marigold", "Repairs"), text), "boat.md")]
    chunks.append((Chunk(1, "/n/scan.pdf", ("page 3",), text), "scan.pdf"))  # says where, not what
    chunks += [(Chunk(2 + n, f"/n/{n}.md", ("DESCRIPTION",), text), f"{n}.md") for n in range(9)]
    pairs = make_pairs(chunks)
    assert [p.query for p in pairs if p.kind == "heading"] == ["Marigold › Repairs"]
    sentences = [p for p in pairs if p.kind == "sentence" and p.note == "boat.md"]
    assert [(p.query, p.passage) for p in sentences] == [(first, rest)]

    training, held_out = split_by_note(pairs, 0.2, seed=29)
    assert held_out and training
    assert not {p.note for p in training} & {p.note for p in held_out}
    assert split_by_note(list(reversed(pairs)), 0.2, seed=29)[1] == list(reversed(held_out))
