"""BM25 over chunk texts, as sparse matrices: incremental adds and removals, fast column-sum queries."""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp

_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from how i if in into is it its me my no not of on or "
    "so that the their them then there these they this to was we what when where which who why will "
    "with you your".split()
)


def _stem(word: str) -> str:
    """A light plural stemmer (Harman's S-stemmer): 'entries'->'entry', 'files'->'file'."""
    if len(word) > 4 and word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


class BM25Index:
    """Rows are documents in insertion order; the caller keeps the row -> chunk mapping."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self.vocabulary: dict[str, int] = {}
        self._term_counts = sp.csr_matrix((0, 0), dtype=np.float32)
        self._pending: list[sp.csr_matrix] = []
        self._weights: sp.csc_matrix | None = None
        self._idf = np.zeros(0, dtype=np.float32)

    def __len__(self) -> int:
        return self._term_counts.shape[0] + sum(p.shape[0] for p in self._pending)

    def add(self, texts: list[str]) -> None:
        data, indices, indptr = [], [], [0]
        for text in texts:
            counts: dict[int, int] = {}
            for token in tokenize(text):
                column = self.vocabulary.setdefault(token, len(self.vocabulary))
                counts[column] = counts.get(column, 0) + 1
            indices.extend(counts)
            data.extend(counts.values())
            indptr.append(len(indices))
        width = len(self.vocabulary)
        new_rows = sp.csr_matrix(
            (np.asarray(data, np.float32), np.asarray(indices, np.int32), np.asarray(indptr, np.int64)),
            shape=(len(texts), width),
        )
        self._pending.append(new_rows)
        self._weights = None

    @property
    def term_counts(self) -> sp.csr_matrix:
        """Documents x terms counts. Adds are stacked lazily: one copy per batch, not per file."""
        if self._pending:
            width = len(self.vocabulary)
            parts = [self._term_counts, *self._pending]
            for part in parts:
                part.resize((part.shape[0], width))
            self._term_counts = sp.vstack(parts, format="csr")
            self._pending = []
        return self._term_counts

    @term_counts.setter
    def term_counts(self, value: sp.csr_matrix) -> None:
        self._term_counts, self._pending = value, []

    def keep_rows(self, keep: np.ndarray) -> None:
        """Drop every row whose entry in the boolean ``keep`` is False."""
        self.term_counts = self.term_counts[np.flatnonzero(keep)]
        self._weights = None

    def _weight_matrix(self) -> sp.csc_matrix:
        """Per (document, term) BM25 contributions; a query's scores are a sum of columns."""
        if self._weights is None:
            tf = self.term_counts
            n_docs = max(tf.shape[0], 1)
            doc_len = np.asarray(tf.sum(axis=1)).ravel()
            avg_len = doc_len.mean() if len(doc_len) else 1.0
            df = np.bincount(tf.indices, minlength=tf.shape[1])
            idf = np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
            self._idf = idf
            rows = np.repeat(np.arange(tf.shape[0]), np.diff(tf.indptr))
            norm = self.k1 * (1 - self.b + self.b * doc_len[rows] / max(avg_len, 1e-9))
            weights = idf[tf.indices] * tf.data * (self.k1 + 1) / (tf.data + norm)
            self._weights = sp.csr_matrix(
                (weights.astype(np.float32), tf.indices, tf.indptr), shape=tf.shape
            ).tocsc()
        return self._weights

    def scores(self, query: str) -> np.ndarray:
        columns = sorted({self.vocabulary[t] for t in tokenize(query) if t in self.vocabulary})
        if not columns or len(self) == 0:
            return np.zeros(len(self), dtype=np.float32)
        return np.asarray(self._weight_matrix()[:, columns].sum(axis=1)).ravel()

    def idf(self, terms: set[str]) -> dict[str, float]:
        """BM25's inverse document frequency of each of ``terms`` the index knows."""
        self._weight_matrix()
        return {t: float(self._idf[self.vocabulary[t]]) for t in terms if t in self.vocabulary}

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the ``k`` best-matching documents (only those sharing a term)."""
        scores = self.scores(query)
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > k:
            candidates = candidates[np.argpartition(-scores[candidates], k)[:k]]
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        return order, scores[order]

    def to_arrays(self) -> dict[str, np.ndarray]:
        terms = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        tf = self.term_counts
        return {
            "bm25_vocabulary": np.frombuffer("\n".join(terms).encode("utf-8"), dtype=np.uint8),
            "bm25_data": tf.data,
            "bm25_indices": tf.indices,
            "bm25_indptr": tf.indptr,
            "bm25_shape": np.asarray(tf.shape, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> BM25Index:
        index = cls()
        text = arrays["bm25_vocabulary"].tobytes().decode("utf-8")
        terms = text.split("\n") if text else []
        index.vocabulary = {term: i for i, term in enumerate(terms)}
        shape = tuple(int(x) for x in arrays["bm25_shape"])
        index.term_counts = sp.csr_matrix(
            (arrays["bm25_data"], arrays["bm25_indices"], arrays["bm25_indptr"]), shape=shape
        )
        return index
