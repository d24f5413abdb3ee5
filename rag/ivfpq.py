"""IVF-PQ for large memories: trained on the user's own vectors, its probe count chosen by recall.

The index is FAISS ``IVF{nlist},PQ{m},Refine(SQfp16)`` with inner product: the inverted lists of
product-quantised codes find candidates, and every candidate is scored again against a float16
copy of its stored vector, so the final order is exact scoring up to float16 rounding (about
1e-3 in cosine). How many lists a search visits (``nprobe``) is chosen when the index is built by
measuring recall@10 against exact search, with stored vectors as the queries.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import faiss
import numpy as np

RECALL_GOAL = 0.95  # recall@10 against exact search that the memory must keep
# The probe count is raised until the measurement passes this, not the bare goal: 256 stored
# passages as queries estimate recall within about ±0.01, and questions are not stored passages
# (at 200,000 clustered vectors, an nprobe that measured just over 0.95 gave 0.947 on new ones).
RECALL_TARGET = 0.97
# Probe counts tried, doubling, up to every list: where neighbours scatter across lists (on the
# synthetic clustered vectors at 1M, a quarter of the lists held only 81% of each exact top 10), a
# search scans every list's codes (48 B per vector against 1,536 for exact search) and still
# re-scores only the best candidates exactly.
FIRST_NPROBE = 2
RECALL_QUERIES = 256  # stored vectors used as queries to measure recall at build time
RECALL_K = 10
PQ_SUBQUANTIZERS = 48  # 384 dims / 48 = 8 dims per byte of code: 48 bytes per vector
# Candidates re-scored per result asked for, and never fewer than the minimum: at 1M synthetic
# vectors with every list probed, 10 per result found 0.949 of the top 10 and 20 found 0.965.
CANDIDATES_PER_RESULT = 20
MIN_CANDIDATES = 200
TRAINING_POINTS_PER_LIST = 64  # FAISS wants at least 39 per list; more is slower, barely better
KMEANS_ITERATIONS = 10
PQ_POINTS_PER_CODE = 64  # training points per codebook entry (256 of them per slice)
SEED = 0


@dataclass(frozen=True)
class IvfPqMeasure:
    """How an IVF-PQ index was built and how well it finds the exact top 10; kept in the manifest."""

    nlist: int
    m: int
    nprobe: int
    trained_on: int  # stored vectors the lists and codebooks were trained on
    built_at: int  # vectors in the index when it was built and measured
    recall_at_10: float  # against exact inner-product search
    recall_queries: int

    def description(self) -> dict:
        return {
            "kind": "ivfpq",
            "faiss": f"IVF{self.nlist},PQ{self.m},Refine(SQfp16)",
            **asdict(self),
            "candidates": f"max({CANDIDATES_PER_RESULT}*k, {MIN_CANDIDATES}), re-scored",
        }

    @classmethod
    def from_description(cls, description: dict) -> IvfPqMeasure:
        return cls(**{name: description[name] for name in cls.__dataclass_fields__})


def list_count(n: int) -> int:
    """A power of two near sqrt(n), with at least 39 vectors per list to train on. FAISS suggests
    4-16·sqrt(n); fewer lists train 4-16x faster on 2 cores, and at a million vectors a search
    still scans only a few tens of thousands of 48-byte codes."""
    target = 2 ** round(math.log2(max(math.sqrt(n), 1)))
    most = 2 ** int(math.log2(max(n // 39, 1)))
    return max(1, min(target, most, 65536))


def build(ids: np.ndarray, vectors: np.ndarray) -> tuple[faiss.Index, IvfPqMeasure]:
    """An IVF-PQ index of these vectors, trained on a seeded sample of them, with the smallest
    probe count on the ladder that reaches the recall target (or every list)."""
    n, dimension = vectors.shape
    nlist = list_count(n)
    m = PQ_SUBQUANTIZERS if dimension % PQ_SUBQUANTIZERS == 0 else _largest_divisor(dimension, 48)
    index = faiss.index_factory(
        dimension, f"IDMap2,IVF{nlist},PQ{m},Refine(SQfp16)", faiss.METRIC_INNER_PRODUCT
    )
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.do_polysemous_training = False  # the factory turns it on; it is slow and unused here
    # Codebooks of 8-dim slices dominate training on 2 cores: fewer iterations and points there
    # cost little recall, and the exact re-scoring of candidates makes up for coarser codes.
    for clustering in (ivf.cp, ivf.pq.cp):
        clustering.niter = KMEANS_ITERATIONS
        clustering.seed = SEED
    ivf.pq.cp.max_points_per_centroid = PQ_POINTS_PER_CODE
    rng = np.random.default_rng(SEED)
    trained_on = min(n, max(TRAINING_POINTS_PER_LIST * nlist, 256 * 40))
    sample = vectors[np.sort(rng.choice(n, trained_on, replace=False))]
    index.train(np.ascontiguousarray(sample, np.float32))
    index.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids.astype(np.int64))
    queries = np.sort(rng.choice(n, min(RECALL_QUERIES, n), replace=False))
    exact = _exact_neighbours(vectors, ids, queries)
    for nprobe in _probe_ladder(nlist):
        recall = _recall(index, vectors, ids, queries, exact, nprobe)
        if recall >= RECALL_TARGET:
            break
    ivf.nprobe = nprobe  # kept in the serialised index too, for anyone reading it with FAISS alone
    measure = IvfPqMeasure(nlist, m, nprobe, trained_on, n, round(recall, 4), len(queries))
    return index, measure


def _probe_ladder(nlist: int) -> list[int]:
    ladder = [min(FIRST_NPROBE, nlist)]
    while ladder[-1] < nlist:
        ladder.append(min(ladder[-1] * 2, nlist))
    return ladder


def search_parameters(nprobe: int, k: int) -> faiss.SearchParameters:
    """Visit ``nprobe`` lists and re-score max(20·k, 200) candidates for a search of ``k``. Passed
    with each search rather than set on the index, so concurrent searches cannot disturb each other."""
    k_factor = float(max(CANDIDATES_PER_RESULT, math.ceil(MIN_CANDIDATES / max(k, 1))))
    return faiss.IndexRefineSearchParameters(
        k_factor=k_factor, base_index_params=faiss.SearchParametersIVF(nprobe=nprobe)
    )


def _exact_neighbours(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    """The exact top 10 of each query vector, itself left out (it is trivially its own best)."""
    _, rows = faiss.knn(
        np.ascontiguousarray(vectors[queries], np.float32),
        np.ascontiguousarray(vectors, np.float32),
        RECALL_K + 1,
        metric=faiss.METRIC_INNER_PRODUCT,
    )
    neighbours = []
    for q, row in zip(queries, rows, strict=True):
        neighbours.append({int(ids[r]) for r in [r for r in row if r >= 0 and r != q][:RECALL_K]})
    return neighbours


def _recall(
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray,
    exact: list[set[int]],
    nprobe: int,
) -> float:
    asked = np.ascontiguousarray(vectors[queries], np.float32)
    _, found = index.search(asked, RECALL_K + 1, params=search_parameters(nprobe, RECALL_K + 1))
    hits = 0
    for q, row, truth in zip(queries, found, exact, strict=True):
        approx = [int(i) for i in row if i >= 0 and i != ids[q]][:RECALL_K]
        hits += len(truth.intersection(approx))
    return hits / (RECALL_K * len(queries))


def _largest_divisor(dimension: int, at_most: int) -> int:
    return next(m for m in range(min(at_most, dimension), 0, -1) if dimension % m == 0)
