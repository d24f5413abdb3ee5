"""Hybrid retrieval: candidates from BM25 and dense search, then one blended order of both scores."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rag.embedder import Embedder
from rag.lexical import tokenize
from rag.rerank import RerankStage, min_max
from rag.store import MemoryStore, contextual_text

Mode = Literal["hybrid", "dense", "lexical"]
CANDIDATES = 50
PER_NOTE = 1  # passages of one note among the hybrid results; chosen on the dev half, see RESULTS


@dataclass(frozen=True)
class RetrievalHit:
    source: str  # path relative to the root it was added with
    root: str
    heading: str  # heading path, " › "-joined
    text: str
    score: float  # the final ranking score of the mode used
    chunk_id: int
    similarity: float | None = None  # cosine between query and passage, when the mode computed it


@dataclass(frozen=True)
class FusionWeights:
    """The final order: ``dense`` * cosine + (1 - ``dense``) * BM25, each min-max scaled over the
    candidates (relative score fusion). 0.75 is the common default for this fusion and was also
    the best on the dev half of bench/data/memory_questions.jsonl; see bench/RESULTS.md."""

    dense: float = 0.75
    headings: float = 0.0  # measured option: weight of query terms found in the note's title and headings


class Retriever:
    def __init__(
        self,
        store: MemoryStore,
        embedder: Embedder,
        weights: FusionWeights | None = None,
        rerank: RerankStage | None = None,
    ):
        self.store = store
        self.embedder = embedder
        self.weights = weights or FusionWeights()
        self.rerank = rerank  # hybrid mode only: reorders the fused top ``rerank.depth``

    def search(
        self,
        query: str,
        k: int = 5,
        mode: Mode = "hybrid",
        per_note: int = PER_NOTE,
        expansion: str = "",
    ) -> list[RetrievalHit]:
        """The best ``k`` passages. Hybrid results hold at most ``per_note`` passages of one note
        (0: no limit), so one long note cannot crowd out the others; the single-method modes are
        the plain baselines and are never capped. ``expansion``: a passage the chat model wrote
        as if answering the query (HyDE); the dense query is the mean of both embeddings."""
        if k <= 0 or self.store.chunk_count == 0 or not query.strip():
            return []
        if mode == "lexical":
            rows, scores = self.store.lexical.search(query, k)
            ids = self.store.lexical_rows[rows]
            return [self._hit(int(c), float(s)) for c, s in zip(ids, scores, strict=True)]
        vector = self._query_vector(query, expansion)
        if mode == "dense":
            ids, scores = self.store.dense.search(vector, k)
            return [self._hit(int(c), float(s), float(s)) for c, s in zip(ids, scores, strict=True)]
        return self._fused(query, vector, k, per_note)

    def _query_vector(self, query: str, expansion: str) -> np.ndarray:
        if not expansion.strip():
            return self.embedder.embed([query])[0]
        both = self.embedder.embed([query, expansion]).sum(axis=0)
        return (both / max(float(np.linalg.norm(both)), 1e-12)).astype(np.float32)

    def _fused(self, query: str, vector: np.ndarray, k: int, per_note: int) -> list[RetrievalHit]:
        """Candidates from both searches, re-scored on both signals and blended."""
        dense_ids, _ = self.store.dense.search(vector, CANDIDATES)
        lexical_scores = self.store.lexical.scores(query)
        rows = self.store.lexical_rows
        top_rows = _top(lexical_scores, CANDIDATES)
        candidates = np.union1d(dense_ids, rows[top_rows]).astype(np.int64)
        cosine = self.store.dense.vectors(candidates) @ vector
        # Chunk ids only grow and removals keep order, so the row of an id is a binary search away.
        bm25 = lexical_scores[np.searchsorted(rows, candidates)]
        blended = self.weights.dense * min_max(cosine) + (1 - self.weights.dense) * min_max(bm25)
        if self.weights.headings > 0:
            blended = blended + self.weights.headings * min_max(self._heading_scores(query, candidates))
        order = np.argsort(-blended, kind="stable")
        if self.rerank is not None:
            order, blended = _reranked(self.store, self.rerank, query, candidates, order, blended)
        if per_note > 0:
            order = self._at_most_per_note(candidates, order, per_note, k)
        return [self._hit(int(candidates[i]), float(blended[i]), float(cosine[i])) for i in order[:k]]

    def _at_most_per_note(
        self, candidates: np.ndarray, order: np.ndarray, per_note: int, k: int
    ) -> np.ndarray:
        kept: list[int] = []
        seen: Counter[str] = Counter()
        for i in order:
            if len(kept) == k:
                break
            note = self.store.chunk(int(candidates[i])).path
            seen[note] += 1
            if seen[note] <= per_note:
                kept.append(i)
        return np.asarray(kept, dtype=np.int64)

    def _heading_scores(self, query: str, candidates: np.ndarray) -> np.ndarray:
        """Headings and title as a field of their own: the summed IDF of the query's terms that
        appear in a passage's file name or heading path."""
        idf = self.store.lexical.idf(set(tokenize(query)))
        scores = np.zeros(len(candidates), dtype=np.float32)
        for i, chunk_id in enumerate(candidates):
            chunk = self.store.chunk(int(chunk_id))
            title = self.store.files[chunk.path].relative.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            field = set(tokenize(" ".join((title.replace("-", " ").replace("_", " "), *chunk.headings))))
            scores[i] = sum(weight for term, weight in idf.items() if term in field)
        return scores

    def _hit(self, chunk_id: int, score: float, similarity: float | None = None) -> RetrievalHit:
        chunk = self.store.chunk(chunk_id)
        entry = self.store.files[chunk.path]
        return RetrievalHit(
            source=entry.relative,
            root=entry.root,
            heading=" › ".join(chunk.headings),
            text=chunk.text,
            score=round(score, 6),
            chunk_id=chunk_id,
            similarity=None if similarity is None else round(similarity, 6),
        )


def _reranked(
    store: MemoryStore,
    stage: RerankStage,
    query: str,
    candidates: np.ndarray,
    order: np.ndarray,
    blended: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The fused order with its top ``depth`` reordered by the reranker, and the scores: the
    rerank stage's for those, the first stage's (capped below them) for the rest."""
    head, rest = order[: stage.depth], order[stage.depth :]
    texts = []
    for i in head:
        chunk = store.chunk(int(candidates[i]))
        texts.append(contextual_text(store.files[chunk.path].relative, chunk.headings, chunk.text))
    new, head_scores = stage.reorder(query, texts, blended[head])
    scores = blended.copy()
    scores[head[new]] = head_scores
    if len(rest):  # keep the scores in rank order past the reranked head
        scores[rest] = np.minimum(blended[rest], float(head_scores.min()))
    return np.concatenate([head[new], rest]), scores


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    positive = np.flatnonzero(scores > 0)
    if len(positive) > k:
        positive = positive[np.argpartition(-scores[positive], k)[:k]]
    return positive
