"""Memory at scale: above memory.ivfpq_above the dense index is IVF-PQ trained on the memory's own
vectors, and it still finds what exact search finds. Real FAISS throughout; the vectors are the
seeded, sentence-embedding-like clusters of tests/clustered_vectors.py (embedding 200,000 real
passages would take most of an hour on 2 cores)."""

from __future__ import annotations

import json
import subprocess

import faiss
import numpy as np
import pytest

from rag.dense import DenseIndex
from rag.store import FileEntry, MemoryStore
from tests.clustered_vectors import clustered_unit_vectors
from tests.conftest import run_lantern

DIMENSION = 384


def _recall_at_10(found: list[np.ndarray], exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(f.tolist()) & set(e.tolist())) / 10 for f, e in zip(found, exact, strict=True)])
    )


@pytest.fixture(scope="module")
def two_hundred_thousand():
    """200,000 stored vectors, and 200 more from the same topics as the questions."""
    vectors = clustered_unit_vectors(200_200, DIMENSION, seed=0)
    return vectors[:200_000], vectors[200_000:]


def test_ivfpq_finds_the_exact_top_10_of_200000_passages(two_hundred_thousand):
    stored, questions = two_hundred_thousand
    dense = DenseIndex(DIMENSION, ivfpq_above=150_000)  # a limit well below the size, as a user set it
    dense.add(np.arange(len(stored), dtype=np.int64), stored)
    dense.finish_build()  # trained in the background; an ingest's last commit waits the same way
    assert dense.kind == "ivfpq"

    exact = faiss.IndexFlatIP(DIMENSION)
    exact.add(stored)
    exact_scores, exact_ids = exact.search(questions, 10)
    found = [dense.search(q, 10) for q in questions]

    assert _recall_at_10([ids for ids, _ in found], exact_ids) >= 0.95
    # Candidates are re-scored against float16 copies of the vectors: the scores are exact cosines
    # up to float16 rounding wherever the exact best passage was among the candidates.
    same_top = [ids[0] == exact_top for (ids, _), exact_top in zip(found, exact_ids[:, 0], strict=True)]
    assert np.mean(same_top) >= 0.95
    gaps = [abs(scores[0] - exact_scores[i, 0]) for i, (_, scores) in enumerate(found) if same_top[i]]
    assert max(gaps) < 2e-3

    measured = dense.description
    assert measured["kind"] == "ivfpq" and measured["recall_at_10"] >= 0.95
    assert measured["built_at"] == 200_000 and measured["recall_queries"] == 256
    assert 1 <= measured["nprobe"] <= measured["nlist"]

    # What a commit writes and the next open reads back searches the same way.
    reopened = DenseIndex.from_arrays(dense.to_arrays(), DIMENSION, measured, 150_000)
    assert reopened.description == measured
    assert [reopened.search(q, 10)[0].tolist() for q in questions[:20]] == [f[0].tolist() for f in found[:20]]


def _add_notes(store: MemoryStore, vectors: np.ndarray, first: int, notes: int) -> None:
    """``notes`` notes of 1,000 passages each, committed one by one as `memory add` does."""
    for n in range(first, first + notes):
        entry = FileEntry(root="/notes", relative=f"note-{n}.md", sha256="0" * 64, size=1, mtime_ns=0)
        chunks = [((f"Note {n}",), f"passage {i} of note {n}") for i in range(1_000)]
        store.put_file(f"/notes/note-{n}.md", entry, chunks, vectors[n * 1_000 : (n + 1) * 1_000])
        store.commit()


def test_a_memory_growing_past_ivfpq_above_switches_and_memory_stats_shows_the_recall(home):
    """The limit is set low in the config file so this stays quick; the switch is the same."""
    home.mkdir(parents=True)
    (home / "config.toml").write_text("[memory]\nivfpq_above = 10000\n", encoding="utf-8")
    vectors = clustered_unit_vectors(12_000, DIMENSION, seed=1)
    store = MemoryStore.open(home / "memory", None, ivfpq_above=10_000)
    store.bind_embedder("synthetic-clusters", DIMENSION)
    _add_notes(store, vectors, first=0, notes=10)
    assert store.index_description["kind"] == "exact"  # 10,000 is not above the limit

    _add_notes(store, vectors, first=10, notes=2)
    store.finish_background_work()  # as the end of `memory add` does: IVF-PQ trains in the background
    store.commit()
    assert store.index_description["kind"] == "ivfpq"
    # A plain memory keeps it in a file of its own, for readers to memory-map (tests/test_memory_mmap.py).
    assert [p.name for p in (home / "memory").glob("*.faiss")] == [f"dense-{store.generation}.faiss"]

    stats = json.loads(_ok(run_lantern("memory", "stats", "--json")))
    assert stats["chunks"] == 12_000
    assert stats["index"]["kind"] == "ivfpq" and stats["index"]["recall_at_10"] >= 0.95
    assert stats["index"]["built_at"] == 11_000  # trained when it crossed; the next note was only added
    line = next(row for row in _ok(run_lantern("memory", "stats")).splitlines() if row.startswith("index"))
    assert "recall@10" in line and "against exact search" in line

    # Opened again, the nearest passage to a stored one is itself.
    reopened = MemoryStore.open(home / "memory", None, ivfpq_above=10_000).load()
    ids, scores = reopened.dense.search(vectors[11_500], 3)
    assert ids[0] == 11_500 and scores[0] > 0.99

    # Forgetting notes down to below 80% of the limit goes back to exact search.
    with reopened.writing():
        for f in range(5):
            reopened.forget(f"/notes/note-{f}.md")
        reopened.commit()
    assert reopened.index_description["kind"] == "exact" and reopened.chunk_count == 7_000
    assert not list((home / "memory").glob("*.faiss"))


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()
