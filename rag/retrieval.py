"""Hybrid retrieval: BM25 and dense candidates, fused by reciprocal rank, then a final blended order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rag.embedder import Embedder
from rag.store import MemoryStore

Mode = Literal["hybrid", "dense", "lexical"]
CANDIDATES = 50
RRF_K = 60


@dataclass(frozen=True)
class RetrievalHit:
    source: str  # path relative to the root it was added with
    root: str
    heading: str  # heading path, " › "-joined
    text: str
    score: float
    chunk_id: int


@dataclass(frozen=True)
class FusionWeights:
    """How the final order blends the two searches (tuned on the dev half of bench questions)."""

    dense: float = 1.0
    lexical: float = 1.0


class Retriever:
    def __init__(self, store: MemoryStore, embedder: Embedder, weights: FusionWeights | None = None):
        self.store = store
        self.embedder = embedder
        self.weights = weights or FusionWeights()

    def search(self, query: str, k: int = 5, mode: Mode = "hybrid") -> list[RetrievalHit]:
        if k <= 0 or self.store.chunk_count == 0 or not query.strip():
            return []
        if mode == "lexical":
            ranked = self._lexical(query, k)
        elif mode == "dense":
            ranked = self._dense(query, k)
        else:
            ranked = self._fused(query, k)
        return [self._hit(cid, score) for cid, score in ranked]

    def _lexical(self, query: str, k: int) -> list[tuple[int, float]]:
        rows, scores = self.store.lexical.search(query, k)
        ids = self.store.lexical_rows[rows]
        return [(int(c), float(s)) for c, s in zip(ids, scores, strict=True)]

    def _dense(self, query: str, k: int) -> list[tuple[int, float]]:
        vector = self.embedder.embed([query])[0]
        ids, scores = self.store.dense.search(vector, k)
        return [(int(c), float(s)) for c, s in zip(ids, scores, strict=True)]

    def _fused(self, query: str, k: int) -> list[tuple[int, float]]:
        """Reciprocal-rank fusion of both candidate lists, weighted per method."""
        fused: dict[int, float] = {}
        for weight, ranked in (
            (self.weights.lexical, self._lexical(query, CANDIDATES)),
            (self.weights.dense, self._dense(query, CANDIDATES)),
        ):
            for rank, (cid, _) in enumerate(ranked):
                fused[cid] = fused.get(cid, 0.0) + weight / (RRF_K + rank + 1)
        order = sorted(fused.items(), key=lambda item: -item[1])[:k]
        return order

    def _hit(self, chunk_id: int, score: float) -> RetrievalHit:
        chunk = self.store.chunk(chunk_id)
        entry = self.store.files[chunk.path]
        return RetrievalHit(
            source=entry.relative,
            root=entry.root,
            heading=" › ".join(chunk.headings),
            text=chunk.text,
            score=round(float(score), 6),
            chunk_id=chunk_id,
        )
