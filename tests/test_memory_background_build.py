"""IVF-PQ is trained in the background: a memory growing past memory.ivfpq_above keeps answering
and taking notes while it trains, and the trained index takes over with nothing lost.

Real FAISS and the real ``rag.ivfpq.build`` throughout. To see the state *while* a build runs
without timing anything, the build is held at a gate the test opens (``PausedBuild``): a barrier
in front of the real build, not a fake result. The limit is 10,000 so each build takes seconds.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from rag import ivfpq
from rag.dense import DenseIndex
from rag.errors import MemoryStoreError
from rag.store import FileEntry, MemoryStore
from tests.clustered_vectors import clustered_unit_vectors

DIMENSION = 384
LIMIT = 10_000
BUILDER_THREAD = "lantern-ivfpq-build"


class PausedBuild:
    """``rag.ivfpq.build`` behind gates: the n-th build waits until the test opens gate n, then
    runs the real build (or raises ``fail_with``)."""

    def __init__(self, fail_with: Exception | None = None):
        self.gates = [threading.Event() for _ in range(4)]
        self._started: list[int] = []  # the snapshot size of each build, in order
        self._arrived = threading.Condition()
        self.fail_with = fail_with
        self._abandoned = False
        self._real_build = ivfpq.build

    def __call__(self, ids: np.ndarray, vectors: np.ndarray):
        with self._arrived:
            call = len(self._started)
            self._started.append(len(ids))
            self._arrived.notify_all()
        if not self.gates[call].wait(timeout=300) or self._abandoned:
            raise RuntimeError("the test ended before it let this build run")
        if self.fail_with is not None:
            raise self.fail_with
        return self._real_build(ids, vectors)

    def started(self, builds: int) -> list[int]:
        """The snapshot sizes of the builds started, once at least ``builds`` of them have."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self._started) >= builds, timeout=60)
            return list(self._started)

    def open(self, build: int) -> None:
        self.gates[build].set()

    def abandon(self) -> None:
        """Let builds still held end at once without building, so no test leaves one running."""
        self._abandoned = True
        for gate in self.gates:
            gate.set()


@pytest.fixture
def paused_build(monkeypatch):
    # A build another test module left running (a store dropped mid-build) would be counted with
    # this test's own; it is a real build of seconds, so let it finish first.
    for leftover in _builders():
        leftover.join(timeout=300)
    paused = PausedBuild()
    monkeypatch.setattr(ivfpq, "build", paused)
    yield paused
    paused.abandon()


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """25,000 stored vectors and, after them, 200 questions from the same topics."""
    return clustered_unit_vectors(25_200, DIMENSION, seed=2)


def _questions(vectors: np.ndarray) -> np.ndarray:
    return vectors[25_000:]


def _exact_top(live: dict[int, np.ndarray], questions: np.ndarray, k: int = 10) -> np.ndarray:
    ids = np.fromiter(live, np.int64, len(live))
    _, rows = faiss.knn(questions, np.stack(list(live.values())), k, metric=faiss.METRIC_INNER_PRODUCT)
    return ids[rows]


def _recall_at_10(dense: DenseIndex, live: dict[int, np.ndarray], questions: np.ndarray) -> float:
    exact = _exact_top(live, questions)
    found = [dense.search(q, 10)[0] for q in questions]
    return float(
        np.mean([len(set(f.tolist()) & set(e.tolist())) / 10 for f, e in zip(found, exact, strict=True)])
    )


def _builders() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == BUILDER_THREAD and t.is_alive()]


def _add(
    dense: DenseIndex,
    live: dict[int, np.ndarray],
    vectors: np.ndarray,
    start: int,
    stop: int,
    batch: int = 500,
) -> None:
    """Passages ``start``..``stop`` in batches, as an ingest adds them."""
    for first in range(start, stop, batch):
        ids = np.arange(first, min(first + batch, stop), dtype=np.int64)
        dense.add(ids, vectors[ids])
        live.update(zip(ids.tolist(), vectors[ids], strict=True))


def test_crossing_ivfpq_above_trains_in_the_background_while_the_old_index_answers(vectors, paused_build):
    dense, live = DenseIndex(DIMENSION, ivfpq_above=LIMIT), {}
    _add(dense, live, vectors, 0, 12_000, batch=12_000)

    # The add that crossed the limit returned at once: exact search still answers, a build runs.
    assert dense.kind == "exact" and dense.building and len(_builders()) == 1
    questions = _questions(vectors)[:50]
    assert [dense.search(q, 10)[0].tolist() for q in questions] == _exact_top(live, questions).tolist()

    # Notes keep arriving and leaving meanwhile, from before the snapshot and after it.
    _add(dense, live, vectors, 12_000, 13_000)
    removed = list(range(100)) + list(range(12_000, 12_050))
    dense.remove(removed)
    for i in removed:
        del live[i]
    assert [dense.search(q, 10)[0].tolist() for q in questions] == _exact_top(live, questions).tolist()

    paused_build.open(0)
    dense.finish_build()

    measured = dense.description
    assert measured["kind"] == "ivfpq" and measured["built_at"] == 12_000  # the snapshot it trained on
    assert measured["recall_at_10"] >= 0.95 and not dense.building and len(dense) == len(live)
    assert _recall_at_10(dense, live, _questions(vectors)) >= 0.95
    for added in (12_050, 12_500, 12_999):  # added during the build: in the new index too
        assert dense.search(vectors[added], 1)[0].tolist() == [added]
    for gone in (0, 99, 12_000, 12_049):  # removed during the build: still gone
        assert gone not in dense.search(vectors[gone], 20)[0].tolist()


def test_a_memory_that_doubles_is_trained_again_in_the_background(vectors, paused_build):
    dense, live = DenseIndex(DIMENSION, ivfpq_above=LIMIT), {}
    _add(dense, live, vectors, 0, 12_000, batch=12_000)
    assert paused_build.started(1) == [12_000]

    # It doubles while the first build still runs: one build at a time, the second trigger waits.
    _add(dense, live, vectors, 12_000, 25_000)
    assert len(_builders()) == 1 and paused_build.started(1) == [12_000]

    # The swap (here at a search) installs the first and finds the memory doubled since it was
    # trained: a retrain starts in the background and the index it replaces keeps answering.
    paused_build.open(0)
    deadline = time.monotonic() + 300
    while dense.kind != "ivfpq" and time.monotonic() < deadline:
        dense.search(vectors[0], 1)
        time.sleep(0.05)
    assert dense.description["built_at"] == 12_000 and dense.building
    assert paused_build.started(2) == [12_000, 25_000]
    assert _recall_at_10(dense, live, _questions(vectors)) >= 0.95

    paused_build.open(1)
    dense.finish_build()
    assert dense.description["built_at"] == 25_000 and len(dense) == 25_000
    assert _recall_at_10(dense, live, _questions(vectors)) >= 0.95


def test_a_failed_build_is_reported_in_one_line_and_the_old_index_keeps_answering(vectors, paused_build):
    paused_build.fail_with = RuntimeError(
        "Error in faiss::Clustering::train at Clustering.cpp:275: out of memory\nmore"
    )
    dense, live = DenseIndex(DIMENSION, ivfpq_above=LIMIT), {}
    _add(dense, live, vectors, 0, 12_000, batch=12_000)
    paused_build.open(0)

    with pytest.raises(MemoryStoreError) as failure:
        dense.finish_build()
    message = str(failure.value)
    assert "\n" not in message and "12,000 passages" in message and "out of memory" in message
    assert "search keeps the exact index" in message

    assert dense.kind == "exact" and len(dense) == 12_000 and not dense.building
    questions = _questions(vectors)[:20]
    assert [dense.search(q, 10)[0].tolist() for q in questions] == _exact_top(live, questions).tolist()

    # The next addition tries again.
    _add(dense, live, vectors, 12_000, 12_500)
    assert dense.building and paused_build.started(2) == [12_000, 12_500]


def _put_note(store: MemoryStore, vectors: np.ndarray, n: int) -> None:
    """Note ``n``: 1,000 passages whose vectors are ``vectors[n*1000 : (n+1)*1000]``."""
    entry = FileEntry(root="/notes", relative=f"note-{n}.md", sha256="0" * 64, size=1, mtime_ns=0)
    chunks = [((f"Note {n}",), f"passage {i} of note {n}") for i in range(1_000)]
    store.put_file(f"/notes/note-{n}.md", entry, chunks, vectors[n * 1_000 : (n + 1) * 1_000])


def test_a_commit_during_a_build_is_valid_and_the_end_of_an_ingest_commits_ivfpq(
    tmp_path, vectors, paused_build
):
    store = MemoryStore.open(tmp_path / "memory", None, ivfpq_above=LIMIT)
    store.bind_embedder("synthetic-clusters", DIMENSION)
    for n in range(11):
        _put_note(store, vectors, n)
    assert store.dense.building

    # A periodic commit does not wait: it writes the exact index that answers now.
    store.commit()
    assert store.index_description["kind"] == "exact"

    # A process that died here would leave that generation, whole; the next one to add starts over.
    after_a_crash = MemoryStore.open(tmp_path / "memory", None, ivfpq_above=LIMIT).load()
    assert after_a_crash.chunk_count == 11_000 and after_a_crash.dense.kind == "exact"
    assert after_a_crash.dense.search(vectors[10_500], 1)[0].tolist() == [10_500]
    _put_note(after_a_crash, vectors, 11)
    assert after_a_crash.dense.building and paused_build.started(2) == [11_000, 12_000]

    # The first process goes on: one more note, then the end of its ingest waits for the index.
    _put_note(store, vectors, 11)
    paused_build.open(0)
    store.finish_background_work()
    store.commit()
    assert store.index_description["kind"] == "ivfpq" and store.index_description["built_at"] == 11_000

    reopened = MemoryStore.open(tmp_path / "memory", None, ivfpq_above=LIMIT).load()
    assert reopened.chunk_count == 12_000 and reopened.dense.description == store.index_description
    ids, scores = reopened.dense.search(vectors[11_500], 3)
    assert ids[0] == 11_500 and scores[0] > 0.99


EXIT_MID_BUILD = """
import numpy as np
from rag.dense import DenseIndex
from tests.clustered_vectors import clustered_unit_vectors

dense = DenseIndex(384, ivfpq_above=10_000)
dense.add(np.arange(12_000), clustered_unit_vectors(12_000, 384, seed=3))
assert dense.building
print("leaving while IVF-PQ trains")
"""


def test_a_process_that_ends_during_a_build_exits_cleanly_without_waiting_for_it():
    repository = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", EXIT_MID_BUILD], cwd=repository, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "leaving while IVF-PQ trains" and not done.stderr
