"""A plain memory with an IVF-PQ index keeps that index in a FAISS file of its own, which readers
memory-map instead of reading it into RAM; writers still add to it, and an encrypted memory never
writes it. The limit is lowered to 10,000 passages so each IVF-PQ build takes seconds."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.home_key import HomeKey
from rag.errors import TamperedFileError
from rag.sealed_file import read_sealed, write_sealed
from rag.store import FileEntry, MemoryStore
from tests.clustered_vectors import clustered_unit_vectors

DIMENSION = 384
LIMIT = 10_000
PASSAGES_PER_NOTE = 1_000


def _put_note(store: MemoryStore, vectors: np.ndarray, n: int) -> None:
    entry = FileEntry(root="/notes", relative=f"note-{n}.md", sha256="0" * 64, size=1, mtime_ns=0)
    chunks = [((f"Note {n}",), f"passage {i} of note {n}") for i in range(PASSAGES_PER_NOTE)]
    rows = vectors[n * PASSAGES_PER_NOTE : (n + 1) * PASSAGES_PER_NOTE]
    store.put_file(f"/notes/note-{n}.md", entry, chunks, rows)


def _open(directory: Path, keys=None) -> MemoryStore:
    return MemoryStore.open(directory, keys, ivfpq_above=LIMIT).load()


def _search_ids(store: MemoryStore, questions: np.ndarray) -> list[list[int]]:
    return [store.dense.search(q, 10)[0].tolist() for q in questions]


def _faiss_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.faiss"))


def _mapped_lines(path: Path) -> list[str]:
    with open("/proc/self/maps") as maps:
        return [line.strip() for line in maps if str(path) in line]


@pytest.fixture(scope="module")
def vectors():
    """13 notes' worth of passages (12 stored, one more to add) and 20 questions."""
    everything = clustered_unit_vectors(13 * PASSAGES_PER_NOTE + 20, DIMENSION, seed=2)
    return everything[: 13 * PASSAGES_PER_NOTE], everything[13 * PASSAGES_PER_NOTE :]


@pytest.fixture(scope="module")
def plain_memory(tmp_path_factory, vectors):
    """A plain memory of 12,000 passages, committed once, and what it found before the commit."""
    stored, questions = vectors
    directory = tmp_path_factory.mktemp("plain") / "memory"
    store = MemoryStore.open(directory, None, ivfpq_above=LIMIT)
    store.bind_embedder("synthetic-clusters", DIMENSION)
    for n in range(12):
        _put_note(store, stored, n)
    store.finish_background_work()  # IVF-PQ is trained in the background (rag/dense.py)
    assert store.dense.kind == "ivfpq"
    found_before_commit = _search_ids(store, questions)
    store.commit()
    return directory, found_before_commit


@pytest.fixture
def memory_copy(plain_memory, tmp_path) -> Path:
    directory, _ = plain_memory
    return Path(shutil.copytree(directory, tmp_path / "memory"))


def test_a_plain_memory_past_the_limit_writes_its_index_as_a_faiss_file(plain_memory):
    directory, _ = plain_memory
    store = _open(directory)
    assert _faiss_files(directory) == [f"dense-{store.generation}.faiss"]
    assert store.dense_file["name"] == f"dense-{store.generation}.faiss"
    assert store.dense_file["size"] == (directory / store.dense_file["name"]).stat().st_size
    assert directory / store.dense_file["name"] in store.data_files()
    index_raw = read_sealed(directory / f"index-{store.generation}.lmem", None)
    with np.load(io.BytesIO(index_raw)) as npz:
        assert "dense_index" not in npz.files and "dense_dead" in npz.files


def test_reopened_the_index_is_mapped_not_read_and_finds_the_same_passages(plain_memory, vectors):
    directory, found_before_commit = plain_memory
    _, questions = vectors
    store = _open(directory)
    assert store.dense.is_mapped
    assert _mapped_lines(directory / store.dense_file["name"])
    assert _search_ids(store, questions) == found_before_commit


def test_adding_after_reopening_copies_the_index_into_ram_and_commits(memory_copy, vectors):
    stored, _ = vectors
    store = MemoryStore.open(memory_copy, None, ivfpq_above=LIMIT)
    with store.writing():
        first_file = store.dense_file["name"]
        _put_note(store, stored, 12)
        assert not store.dense.is_mapped
        store.commit()
    assert _faiss_files(memory_copy) == [f"dense-{store.generation}.faiss"] != [first_file]
    # The view kept after the write (serve and the TUI keep it) searches the new file, mapped.
    assert store.dense.is_mapped and _mapped_lines(memory_copy / store.dense_file["name"])

    reopened = _open(memory_copy)
    assert reopened.chunk_count == 13_000 and reopened.dense.is_mapped
    ids, scores = reopened.dense.search(stored[12_345], 1)
    assert ids[0] == 12_345 and scores[0] > 0.99


def test_a_reader_keeps_searching_after_a_writer_deletes_the_file_it_mapped(memory_copy, vectors):
    stored, questions = vectors
    reader = _open(memory_copy)
    mapped_file = memory_copy / reader.dense_file["name"]
    found = _search_ids(reader, questions)

    writer = MemoryStore.open(memory_copy, None, ivfpq_above=LIMIT)
    with writer.writing():
        writer.forget("/notes/note-0.md")
        writer.commit()
    assert not mapped_file.exists()
    assert any(line.endswith("(deleted)") for line in _mapped_lines(mapped_file))

    assert _search_ids(reader, questions) == found


def test_sealing_a_plain_memory_removes_the_faiss_file_and_sealed_commits_write_none(memory_copy, vectors):
    stored, questions = vectors
    found = _search_ids(_open(memory_copy), questions)
    key = HomeKey.create(memory_copy.parent, b"correct horse battery staple")
    MemoryStore.seal(memory_copy, key.data_cipher())
    assert _faiss_files(memory_copy) == []

    sealed = MemoryStore.open(memory_copy, key, ivfpq_above=LIMIT)
    with sealed.writing():
        assert sealed.dense.kind == "ivfpq" and not sealed.dense.is_mapped
        assert _search_ids(sealed, questions) == found
        _put_note(sealed, stored, 12)
        sealed.commit()
    assert _faiss_files(memory_copy) == [] and sealed.dense_file is None
    assert _open(memory_copy, key).chunk_count == 13_000


def _damaged(path: Path) -> str:
    """The start of the one-line error that names ``path``."""
    return f"^{re.escape(str(path))} is damaged or was altered; Lantern did not open it$"


@pytest.mark.parametrize("kept", ["header only", "half"])
def test_a_truncated_faiss_file_is_named_and_not_opened(memory_copy, kept):
    # FAISS's memory-mapped reader crashes the process on a file cut inside its header.
    manifest = json.loads(read_sealed(memory_copy / "manifest.lmem", None))
    path = memory_copy / manifest["dense_file"]["name"]
    data = path.read_bytes()
    path.write_bytes(data[:100] if kept == "header only" else data[: len(data) // 2])
    with pytest.raises(TamperedFileError, match=_damaged(path)):
        _open(memory_copy)


def test_a_changed_byte_is_refused_by_a_writer_before_it_builds_on_it(memory_copy):
    store = _open(memory_copy)  # a reader checks the size only: hashing would read the whole file
    path = memory_copy / store.dense_file["name"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TamperedFileError, match=_damaged(path)), store.writing():
        pass


def test_a_missing_faiss_file_says_to_restore_it(memory_copy):
    store = _open(memory_copy)
    (memory_copy / store.dense_file["name"]).unlink()
    with pytest.raises(TamperedFileError, match="is missing; restore it from a backup"):
        _open(memory_copy)


def test_a_commit_killed_before_its_manifest_opens_as_the_last_one(memory_copy, vectors, monkeypatch):
    stored, questions = vectors
    committed = _open(memory_copy)
    found = _search_ids(committed, questions)

    def killed_at_the_manifest(path: Path, data: bytes, cipher) -> None:
        if path.name == "manifest.lmem":
            raise KeyboardInterrupt
        write_sealed(path, data, cipher)

    writer = MemoryStore.open(memory_copy, None, ivfpq_above=LIMIT)
    with writer.writing():
        _put_note(writer, stored, 12)
        monkeypatch.setattr("rag.store.write_sealed", killed_at_the_manifest)
        with pytest.raises(KeyboardInterrupt):
            writer.commit()
    monkeypatch.undo()
    assert len(_faiss_files(memory_copy)) == 2  # the new generation's file, never committed

    reopened = _open(memory_copy)
    assert reopened.generation == committed.generation and reopened.chunk_count == 12_000
    assert _search_ids(reopened, questions) == found
    with reopened.writing():
        reopened.commit()
    assert _faiss_files(memory_copy) == [f"dense-{reopened.generation}.faiss"]
