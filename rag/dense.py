"""Dense vector search with FAISS: exact below a size, HNSW above it, IVF-PQ above a larger one
(rag/ivfpq.py), chosen automatically as the memory grows and shrinks.

IVF-PQ is built in the background: training takes minutes at a million vectors, and an ingest
must keep embedding meanwhile. When an IVF-PQ build falls due (the memory crosses
``ivfpq_above``, has doubled since its IVF-PQ index was trained, or a fifth of it is masked
removals), ``DenseIndex`` copies its live ids and vectors, trains on that copy on a daemon
thread (FAISS releases the GIL) and returns at once. The current index keeps answering searches
and taking additions and removals, which are also written down for the new index. The next
add, remove, search or commit on the caller's thread finds the build finished and, under a lock,
swaps it in: the vectors added since the copy are added to it and the ids removed since are
masked, then whether another build is due is checked again. One build runs at a time; a trigger
while it runs is not queued, since that check after the swap sees the same state. A failed build
is raised at the next add, remove or commit as ``MemoryStoreError``, with the old index intact.
``finish_build`` waits for it (the end of an ingest commits a trained index). A process that
exits mid-build loses only the build: the committed generation is the old index, and the next
addition starts the build again.

An index can also live in a FAISS file of its own and be memory-mapped (``write_index_file``,
``read_mapped_index``): searches then read its pages from the file instead of a copy in RAM.
FAISS cannot change a mapped index (adding to it aborts the process), so ``add`` copies it into
RAM first; readers never add, writers pay the copy.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from app.atomic import atomic_output_path
from rag import ivfpq
from rag.errors import MemoryStoreError

EXACT_LIMIT = 50_000  # below this, exact inner-product search is already fast (~5 ms on 2 cores)
IVFPQ_ABOVE = 200_000  # the default of memory.ivfpq_above
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
_DEAD_FRACTION_TO_REBUILD = 0.2
_GROWTH_TO_RETRAIN = 2.0  # IVF-PQ is trained again (and its recall measured) when the memory doubles
_SHRINK_HYSTERESIS = 0.8  # a smaller kind only below 80% of its limit, so no rebuild on every edit
_KINDS = ("exact", "hnsw", "ivfpq")  # smallest to largest


@dataclass
class _BackgroundBuild:
    """An IVF-PQ index being trained on a copy of the live vectors, and what changed since the copy."""

    snapshot_ids: np.ndarray
    added_ids: list[np.ndarray] = field(default_factory=list)
    added_vectors: list[np.ndarray] = field(default_factory=list)
    removed: set[int] = field(default_factory=set)
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[faiss.Index, ivfpq.IvfPqMeasure] | None = None
    error: Exception | None = None

    def run(self, build: Callable, vectors: np.ndarray) -> None:
        try:
            self.result = build(self.snapshot_ids, vectors)
        except Exception as exc:  # raised on the caller's thread at the swap; a thread would lose it
            self.error = exc
        finally:
            self.done.set()

    def catch_up(self, index: faiss.Index) -> set[int]:
        """Add to the new ``index`` what was added after the copy and not removed again (chunk ids
        are never reused); returns the ids of the copy removed since, for the caller to mask."""
        removed = np.fromiter(self.removed, np.int64, len(self.removed))
        if self.added_ids:
            ids, vectors = np.concatenate(self.added_ids), np.concatenate(self.added_vectors)
            keep = ~np.isin(ids, removed)
            index.add_with_ids(vectors[keep], ids[keep])
        return {int(i) for i in removed[np.isin(removed, self.snapshot_ids)]}

    def failure(self, kind: str) -> str:
        reason = (str(self.error).strip().splitlines() or [""])[0]
        return (
            f"building the IVF-PQ index of {len(self.snapshot_ids):,} passages failed "
            f"({type(self.error).__name__}{': ' + reason if reason else ''}); search keeps the {kind} "
            "index and the next addition tries again (free memory, or raise memory.ivfpq_above)"
        )


class DenseIndex:
    """Vectors keyed by chunk id. HNSW and IVF-PQ do not delete here, so removals there are masked
    until a rebuild. ``ivfpq_above``: the size above which the index is IVF-PQ (memory.ivfpq_above)."""

    def __init__(self, dimension: int, kind: str = "exact", ivfpq_above: int = IVFPQ_ABOVE):
        self.dimension = dimension
        self.kind = kind
        self.ivfpq_above = ivfpq_above
        self.ivfpq: ivfpq.IvfPqMeasure | None = None  # how the IVF-PQ index was built and measured
        self.index = self._empty(kind if kind != "ivfpq" else "exact")  # IVF-PQ is built, not empty
        self.dead: set[int] = set()
        self._build: _BackgroundBuild | None = None
        self._swap_lock = threading.Lock()
        # The index as mapped from its file. Weak, so an index replaced (a rebuild) is unmapped
        # at once, and compared by identity, so a rebuild's new index never counts as mapped.
        self._mapped: weakref.ref | None = None

    def _empty(self, kind: str) -> faiss.IndexIDMap2:
        if kind == "exact":
            base = faiss.IndexFlatIP(self.dimension)
        else:
            base = faiss.IndexHNSWFlat(self.dimension, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return faiss.IndexIDMap2(base)

    def __len__(self) -> int:
        return self.index.ntotal - len(self.dead)

    @property
    def description(self) -> dict:
        if self.kind == "ivfpq":
            return self.ivfpq.description()
        if self.kind == "exact":
            return {"kind": "exact", "faiss": "IndexFlatIP"}
        return {
            "kind": "hnsw",
            "faiss": "IndexHNSWFlat",
            "M": HNSW_NEIGHBOURS,
            "efConstruction": HNSW_EF_CONSTRUCTION,
            "efSearch": HNSW_EF_SEARCH,
        }

    @property
    def building(self) -> bool:
        """Whether an IVF-PQ index is being built in the background (finished but not swapped in
        counts too)."""
        return self._build is not None

    @property
    def is_mapped(self) -> bool:
        """Whether searches read the index from its file (see read_mapped_index)."""
        return self._mapped is not None and self._mapped() is self.index

    def use_mapped(self, index: faiss.Index) -> None:
        """Search ``index`` from now on: this same index as read_mapped_index read it back."""
        self.index, self._mapped = index, weakref.ref(index)

    def _copy_into_ram(self) -> None:
        if self.is_mapped:
            self.index = faiss.deserialize_index(faiss.serialize_index(self.index))
            self._mapped = None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.install_finished_build()
        self._copy_into_ram()
        if len(ids):
            ids, vectors = ids.astype(np.int64), np.ascontiguousarray(vectors, np.float32)
            self.index.add_with_ids(vectors, ids)
            if self._build is not None:
                self._build.added_ids.append(ids)
                self._build.added_vectors.append(vectors.copy())  # the caller may reuse its buffer
        self._rebuild_if_due()

    def remove(self, ids: list[int]) -> None:
        if not ids:
            return
        self.install_finished_build()
        if self._build is not None:
            self._build.removed.update(int(i) for i in ids)
        if self.kind == "exact":
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))
        else:
            self.dead.update(ids)
        self._rebuild_if_due()

    def kind_for(self, size: int) -> str:
        if size > self.ivfpq_above:
            return "ivfpq"
        return "hnsw" if size > EXACT_LIMIT else "exact"

    def _rebuild_if_due(self) -> None:
        # Hysteresis: a store hovering around a limit must not rebuild on every edit.
        larger = self.kind_for(len(self))
        smaller = self.kind_for(int(len(self) / _SHRINK_HYSTERESIS))
        if _KINDS.index(larger) > _KINDS.index(self.kind):
            self._rebuild(larger)
        elif _KINDS.index(smaller) < _KINDS.index(self.kind):
            self._rebuild(smaller)
        elif self.kind == "ivfpq" and len(self) >= _GROWTH_TO_RETRAIN * self.ivfpq.built_at:
            self._rebuild("ivfpq")  # lists trained on half the vectors drift from the rest
        elif len(self.dead) > _DEAD_FRACTION_TO_REBUILD * self.index.ntotal:
            self._rebuild(self.kind)

    def _rebuild(self, kind: str) -> None:
        # Only IVF-PQ goes to the background: exact and HNSW rebuilds are at most a few seconds
        # below the 200,000 of memory.ivfpq_above's default, and the rare large one (shrinking
        # out of IVF-PQ after a forget) happens in a command with nothing else to run beside it.
        if kind == "ivfpq":
            self._start_background_build()
            return
        ids, vectors = self._live_ids_and_vectors()
        self.index, self.ivfpq, self.kind, self.dead = self._empty(kind), None, kind, set()
        if len(ids):
            self.index.add_with_ids(vectors, ids)

    def _live_ids_and_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        # IVF-PQ reconstructs from its float16 copies, so vectors that pass through it are rounded once.
        if not len(ids):
            return ids, np.zeros((0, self.dimension), np.float32)
        vectors = self.index.index.reconstruct_n(0, self.index.ntotal)
        keep = ~np.isin(ids, np.fromiter(self.dead, np.int64, len(self.dead)))
        return ids[keep], vectors[keep]

    def _start_background_build(self) -> None:
        if self._build is not None:
            return  # the check after its swap starts the next one if it is still due
        ids, vectors = self._live_ids_and_vectors()
        build = _BackgroundBuild(ids)
        # A daemon: a process that exits mid-build loses only the build, never hangs on it.
        worker = threading.Thread(
            target=build.run, args=(ivfpq.build, vectors), name="lantern-ivfpq-build", daemon=True
        )
        self._build = build
        worker.start()

    def install_finished_build(self, raise_failure: bool = True) -> None:
        """Swap in a finished background build, on the caller's thread; the worker only ever
        touches its own copy and its new index."""
        build = self._build
        if build is None or not build.done.is_set():
            return
        with self._swap_lock:
            if self._build is not build:  # another thread swapped it in meanwhile
                return
            if build.error is not None:
                if not raise_failure:
                    return
                self._build = None
                raise MemoryStoreError(build.failure(self.kind)) from build.error
            self._build = None
            # Removals may have shrunk the memory out of IVF-PQ's range while it was built.
            if self.kind_for(int(len(self) / _SHRINK_HYSTERESIS)) == "ivfpq":
                index, measure = build.result
                dead = build.catch_up(index)
                self.kind, self.index, self.ivfpq, self.dead = "ivfpq", index, measure, dead
            self._rebuild_if_due()

    def finish_build(self) -> None:
        """Wait for a background IVF-PQ build, and any the swap makes due, and swap it in."""
        while self._build is not None:
            self._build.done.wait()
            self.install_finished_build()

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ids and cosine scores of the ``k`` nearest vectors."""
        # A search swaps in a finished build but leaves a failed one to the next writer to report.
        self.install_finished_build(raise_failure=False)
        with self._swap_lock:  # one consistent view, whatever another search swaps in meanwhile
            kind, index, measure, dead = self.kind, self.index, self.ivfpq, self.dead
        if index.ntotal == len(dead) or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        fetch = min(index.ntotal, k + len(dead))
        params = None
        if kind == "hnsw":
            faiss.downcast_index(index.index).hnsw.efSearch = max(HNSW_EF_SEARCH, fetch)
        elif kind == "ivfpq":
            params = ivfpq.search_parameters(measure.nprobe, fetch)
        query = np.ascontiguousarray(vector.reshape(1, -1), np.float32)
        scores, ids = index.search(query, fetch, params=params)
        pairs = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0 and i not in dead]
        pairs = pairs[:k]
        return np.asarray([i for i, _ in pairs], np.int64), np.asarray([s for _, s in pairs], np.float32)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of these chunk ids (flat storage, so exact for HNSW too; IVF-PQ keeps
        them as float16)."""
        if len(ids) == 0:
            return np.zeros((0, self.dimension), np.float32)
        return np.stack([self.index.reconstruct(int(i)) for i in ids])

    def to_arrays(self, with_index: bool = True) -> dict[str, np.ndarray]:
        """What a commit stores; without the FAISS index when it goes to a file of its own."""
        self.install_finished_build()  # a build still running is not waited for: this index is valid
        arrays = {"dense_dead": np.asarray(sorted(self.dead), dtype=np.int64)}
        if with_index:
            arrays["dense_index"] = faiss.serialize_index(self.index)
        return arrays

    @classmethod
    def from_arrays(
        cls,
        arrays: dict[str, np.ndarray],
        dimension: int,
        description: dict,
        ivfpq_above: int = IVFPQ_ABOVE,
        mapped_index: faiss.Index | None = None,
    ) -> DenseIndex:
        """The index a commit wrote, with ``description`` as the manifest recorded it;
        ``mapped_index``: its FAISS index from read_mapped_index when it is not in ``arrays``."""
        dense = cls(dimension, description["kind"], ivfpq_above)
        if dense.kind == "ivfpq":
            dense.ivfpq = ivfpq.IvfPqMeasure.from_description(description)
        if mapped_index is not None:
            dense.use_mapped(mapped_index)
        else:
            # deserialize_index already returns the concrete IndexIDMap2, and it owns the memory;
            # a downcast wrapper would not, and the index would be freed under us.
            dense.index = faiss.deserialize_index(arrays["dense_index"])
        if dimension and dense.index.d != dimension:  # 0: no embedder bound yet, nothing stored
            raise ValueError(f"index dimension {dense.index.d} != {dimension}")
        dense.dead = {int(i) for i in arrays["dense_dead"]}
        return dense


def write_index_file(index: faiss.Index, path: Path) -> None:
    """Write ``index`` as a FAISS file that appears at ``path`` only once complete and synced."""
    with atomic_output_path(path, mode=0o600) as temp:
        faiss.write_index(index, str(temp))


def read_mapped_index(path: Path) -> faiss.Index:
    """The index in ``path``, memory-mapped (IVF lists, codes and the float16 copies alike): pages
    are read when a search touches them, and stay readable after the file is deleted. The caller
    checks the file's size first: FAISS's mapped reader can crash on a truncated file."""
    # IO_FLAG_MMAP would map only the IVF lists, and the float16 copies are most of the file.
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
