"""Dense vector search with FAISS: exact below a size, HNSW above it, IVF-PQ above a larger one
(rag/ivfpq.py), chosen automatically as the memory grows and shrinks.

An index can also live in a FAISS file of its own and be memory-mapped (``write_index_file``,
``read_mapped_index``): searches then read its pages from the file instead of a copy in RAM.
FAISS cannot change a mapped index (adding to it aborts the process), so ``add`` copies it into
RAM first; readers never add, writers pay the copy.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import faiss
import numpy as np

from app.atomic import atomic_output_path
from rag import ivfpq

EXACT_LIMIT = 50_000  # below this, exact inner-product search is already fast (~5 ms on 2 cores)
IVFPQ_ABOVE = 200_000  # the default of memory.ivfpq_above
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
_DEAD_FRACTION_TO_REBUILD = 0.2
_GROWTH_TO_RETRAIN = 2.0  # IVF-PQ is trained again (and its recall measured) when the memory doubles
_SHRINK_HYSTERESIS = 0.8  # a smaller kind only below 80% of its limit, so no rebuild on every edit
_KINDS = ("exact", "hnsw", "ivfpq")  # smallest to largest


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
        self._copy_into_ram()
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids.astype(np.int64))
        self._fit_kind_to_size()
        if self.kind == "ivfpq" and len(self) >= _GROWTH_TO_RETRAIN * self.ivfpq.built_at:
            self._rebuild("ivfpq")  # lists trained on half the vectors drift from the rest

    def remove(self, ids: list[int]) -> None:
        if not ids:
            return
        if self.kind == "exact":
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))
        else:
            self.dead.update(ids)
            if len(self.dead) > _DEAD_FRACTION_TO_REBUILD * self.index.ntotal:
                self._rebuild(self.kind)
        self._fit_kind_to_size()

    def kind_for(self, size: int) -> str:
        if size > self.ivfpq_above:
            return "ivfpq"
        return "hnsw" if size > EXACT_LIMIT else "exact"

    def _fit_kind_to_size(self) -> None:
        # Hysteresis: a store hovering around a limit must not rebuild on every edit.
        larger = self.kind_for(len(self))
        smaller = self.kind_for(int(len(self) / _SHRINK_HYSTERESIS))
        if _KINDS.index(larger) > _KINDS.index(self.kind):
            self._rebuild(larger)
        elif _KINDS.index(smaller) < _KINDS.index(self.kind):
            self._rebuild(smaller)

    def _rebuild(self, kind: str) -> None:
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        # IVF-PQ reconstructs from its float16 copies, so vectors that pass through it are rounded once.
        vectors = self.index.index.reconstruct_n(0, self.index.ntotal) if len(ids) else None
        keep = ~np.isin(ids, np.fromiter(self.dead, np.int64, len(self.dead)))
        self.dead = set()
        if kind == "ivfpq":
            self.index, self.ivfpq = ivfpq.build(ids[keep], vectors[keep])
        else:
            self.index, self.ivfpq = self._empty(kind), None
            if vectors is not None and keep.any():
                self.index.add_with_ids(vectors[keep], ids[keep])
        self.kind = kind

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ids and cosine scores of the ``k`` nearest vectors."""
        if len(self) == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        fetch = min(self.index.ntotal, k + len(self.dead))
        params = None
        if self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = max(HNSW_EF_SEARCH, fetch)
        elif self.kind == "ivfpq":
            params = ivfpq.search_parameters(self.ivfpq.nprobe, fetch)
        query = np.ascontiguousarray(vector.reshape(1, -1), np.float32)
        scores, ids = self.index.search(query, fetch, params=params)
        pairs = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0 and i not in self.dead]
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
