"""Dense vector search with FAISS: exact below a size, HNSW above it, chosen automatically."""

from __future__ import annotations

import faiss
import numpy as np

EXACT_LIMIT = 50_000  # below this, exact inner-product search is already fast (~5 ms on 2 cores)
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
_DEAD_FRACTION_TO_REBUILD = 0.2


class DenseIndex:
    """Vectors keyed by chunk id. HNSW cannot delete, so removals there are masked until a rebuild."""

    def __init__(self, dimension: int, kind: str = "exact"):
        self.dimension = dimension
        self.kind = kind
        self.index = self._empty(kind)
        self.dead: set[int] = set()

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
        if self.kind == "exact":
            return {"kind": "exact", "faiss": "IndexFlatIP"}
        return {
            "kind": "hnsw",
            "faiss": "IndexHNSWFlat",
            "M": HNSW_NEIGHBOURS,
            "efConstruction": HNSW_EF_CONSTRUCTION,
            "efSearch": HNSW_EF_SEARCH,
        }

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids.astype(np.int64))
        self._fit_kind_to_size()

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

    def _fit_kind_to_size(self) -> None:
        # Hysteresis: a store hovering around the limit must not rebuild on every edit.
        if self.kind == "exact" and len(self) > EXACT_LIMIT:
            self._rebuild("hnsw")
        elif self.kind == "hnsw" and len(self) < EXACT_LIMIT * 0.8:
            self._rebuild("exact")

    def _rebuild(self, kind: str) -> None:
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        vectors = self.index.index.reconstruct_n(0, self.index.ntotal) if len(ids) else None
        keep = np.asarray([i not in self.dead for i in ids], dtype=bool)
        self.kind, self.index, self.dead = kind, self._empty(kind), set()
        if vectors is not None and keep.any():
            self.index.add_with_ids(vectors[keep], ids[keep])

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ids and cosine scores of the ``k`` nearest vectors."""
        if len(self) == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        fetch = min(self.index.ntotal, k + len(self.dead))
        if self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = max(HNSW_EF_SEARCH, fetch)
        scores, ids = self.index.search(np.ascontiguousarray(vector.reshape(1, -1), np.float32), fetch)
        pairs = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0 and i not in self.dead]
        pairs = pairs[:k]
        return np.asarray([i for i, _ in pairs], np.int64), np.asarray([s for _, s in pairs], np.float32)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of these chunk ids (flat storage, so exact for HNSW too)."""
        if len(ids) == 0:
            return np.zeros((0, self.dimension), np.float32)
        return np.stack([self.index.reconstruct(int(i)) for i in ids])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "dense_index": faiss.serialize_index(self.index),
            "dense_dead": np.asarray(sorted(self.dead), dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], dimension: int, kind: str) -> DenseIndex:
        dense = cls(dimension, kind)
        # deserialize_index already returns the concrete IndexIDMap2, and it owns the memory;
        # a downcast wrapper would not, and the index would be freed under us.
        dense.index = faiss.deserialize_index(arrays["dense_index"])
        if dimension and dense.index.d != dimension:  # 0: no embedder bound yet, nothing stored
            raise ValueError(f"index dimension {dense.index.d} != {dimension}")
        dense.dead = {int(i) for i in arrays["dense_dead"]}
        return dense
