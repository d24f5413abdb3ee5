"""The dense index at scale: exact, HNSW and IVF-PQ (rag/dense.py) built on the same vectors.

For each kind: build time, recall@10 against exact search, single-query search latency p50/p95,
the resident memory the opened index adds to a fresh process (after opening it and after the
queries), and the size of what a commit serialises (rag/store.py writes it into index-<gen>.lmem,
or, for IVF-PQ in a plain memory, into dense-<gen>.faiss, which readers memory-map: its RSS
figures are then mostly file pages a search touched, which the kernel can drop, and the "anon"
figure is what the process holds in RAM of its own). Each kind is built in a process of its own
and opened again in another, so memory figures are the index's own.

Vectors: ``--n`` seeded, sentence-embedding-like clustered unit vectors (tests/clustered_vectors.py);
embedding a million real passages with MiniLM takes about 7 hours on 2 cores. ``--real N`` adds a
check on real embeddings (bench/real_passages.py: generated passages, the bundled
all-MiniLM-L6-v2, cached and resumable): IVF-PQ's recall on N of them (IVF-PQ forced at that size),
with 2,000 questions from another stream.

Run: .venv/bin/python bench/bench_memory_scale.py [--n 1000000] [--queries 200] [--hnsw-n 200000]
                                                   [--real 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

import rag.dense  # noqa: E402
from bench.real_passages import QUESTION_SEED, STORED_SEED, embedded_passages  # noqa: E402
from rag.dense import DenseIndex, read_mapped_index, write_index_file  # noqa: E402
from tests.clustered_vectors import clustered_unit_vectors  # noqa: E402

QUESTIONS = 2_000  # real questions: another seeded stream of generated passages

KINDS = ("exact", "hnsw", "ivfpq")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_anon_bytes() -> int:
    """Resident memory that is the process's own, not pages of mapped files."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("RssAnon:"))
    return int(line.split()[1]) * 1024


def build_index(kind: str, vectors: np.ndarray) -> DenseIndex:
    """The kind asked for, whatever the size (the automatic choice is what is being compared)."""
    n, dimension = vectors.shape
    ids = np.arange(n, dtype=np.int64)
    if kind == "exact":
        rag.dense.EXACT_LIMIT = 1 << 62
        dense = DenseIndex(dimension, "exact", ivfpq_above=1 << 62)
    elif kind == "hnsw":
        rag.dense.EXACT_LIMIT = 0
        dense = DenseIndex(dimension, "hnsw", ivfpq_above=1 << 62)
    else:
        dense = DenseIndex(dimension, "exact", ivfpq_above=max(n - 1, 10_000))
    dense.add(ids, vectors)
    dense.finish_build()  # IVF-PQ is trained in the background; its build time is what is measured
    assert dense.kind == kind, (dense.kind, kind)
    return dense


def child_build(kind: str, work: Path, n: int) -> dict:
    vectors = np.load(work / "vectors.npy", mmap_mode="r")[:n]
    vectors = np.ascontiguousarray(vectors)
    started = time.perf_counter()
    dense = build_index(kind, vectors)
    seconds = time.perf_counter() - started
    mapped = kind == "ivfpq"  # as a plain memory commits it: a FAISS file of its own
    np.savez(work / f"{kind}.npz", **dense.to_arrays(with_index=not mapped))
    serialised = (work / f"{kind}.npz").stat().st_size
    if mapped:
        write_index_file(dense.index, work / f"{kind}.faiss")
        serialised += (work / f"{kind}.faiss").stat().st_size
    (work / f"{kind}.json").write_text(json.dumps(dense.description))
    return {"build_s": round(seconds, 1), "serialised_bytes": serialised}


def child_search(kind: str, work: Path, n: int, in_ram: bool = False) -> dict:
    """Open what child_build wrote as a reader does, and search it; ``in_ram``: a FAISS file is
    read into RAM as it was before readers memory-mapped it."""
    queries = np.load(work / "queries.npy")
    truth = np.load(work / f"truth-{n}.npy")
    before, before_anon = rss_bytes(), rss_anon_bytes()
    with np.load(work / f"{kind}.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    description = json.loads((work / f"{kind}.json").read_text())
    faiss_file = work / f"{kind}.faiss"
    mapped_index = None
    if faiss_file.exists() and in_ram:
        arrays["dense_index"] = np.fromfile(faiss_file, dtype=np.uint8)  # as an npz would hold it
    elif faiss_file.exists():
        mapped_index = read_mapped_index(faiss_file)
    dense = DenseIndex.from_arrays(arrays, queries.shape[1], description, 1 << 62, mapped_index)
    del arrays
    opened = rss_bytes()
    return {
        **measure_searches(dense, queries, truth),
        "rss_open_mb": round((opened - before) / 2**20),
        "rss_after_queries_mb": round((rss_bytes() - before) / 2**20),
        "rss_anon_after_queries_mb": round((rss_anon_bytes() - before_anon) / 2**20),
        "mapped": dense.is_mapped,
        "description": description,
    }


def measure_searches(dense: DenseIndex, queries: np.ndarray, truth: np.ndarray) -> dict:
    """recall@10 against the exact top 10 in ``truth``, and single-query latency, one query at a time."""
    times, hits = [], 0
    for query, exact in zip(queries, truth, strict=True):
        started = time.perf_counter()
        ids, _ = dense.search(query, 10)
        times.append((time.perf_counter() - started) * 1000)
        hits += len(set(ids.tolist()) & set(exact.tolist()))
    return {
        "recall_at_10": round(hits / (10 * len(queries)), 4),
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p95_ms": round(float(np.percentile(times, 95)), 2),
    }


def run_child(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def real_embeddings_check(count: int) -> dict:
    """IVF-PQ (forced at this size) on real MiniLM embeddings of generated passages, with
    questions from another stream of passages: recall@10 against exact, and search latency. The
    index's settings were chosen on the synthetic vectors; these vectors did not choose them."""
    stored = embedded_passages(count, STORED_SEED)
    asked = embedded_passages(QUESTIONS, QUESTION_SEED)
    _, truth = faiss.knn(asked, stored, 10, metric=faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    dense = build_index("ivfpq", stored)
    build_s = time.perf_counter() - started
    return {
        "passages": count,
        "questions": len(asked),
        "build_s": round(build_s, 1),
        **measure_searches(dense, asked, truth),
        "description": dense.description,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-n", type=int, default=200_000, help="HNSW builds slowly: its own size")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument(
        "--seed", type=int, default=0, help="of the synthetic set; 0 chose IVF-PQ's settings, 1 did not"
    )
    parser.add_argument(
        "--real", type=int, default=0, help="also check IVF-PQ on N real embeddings (cached)"
    )
    parser.add_argument("--child", nargs=4, metavar=("ACTION", "KIND", "WORK", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        action, kind, work, n = args.child
        if action == "build":
            print(json.dumps(child_build(kind, Path(work), int(n))))
        else:
            print(json.dumps(child_search(kind, Path(work), int(n), in_ram=action == "search-in-ram")))
        return

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; faiss {faiss.__version__}")
    results: dict = {"n": args.n, "queries": args.queries, "seed": args.seed, "kinds": {}}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        everything = clustered_unit_vectors(args.n + args.queries, seed=args.seed)
        np.save(work / "vectors.npy", everything[: args.n])
        queries = everything[args.n :]
        np.save(work / "queries.npy", queries)
        del everything
        print(
            f"{args.n:,} clustered vectors + {args.queries} held-out queries "
            f"in {time.perf_counter() - started:.0f} s"
        )
        stored = np.load(work / "vectors.npy", mmap_mode="r")
        for n in sorted({args.n, min(args.hnsw_n, args.n)}):
            _, truth = faiss.knn(
                queries, np.ascontiguousarray(stored[:n]), 10, metric=faiss.METRIC_INNER_PRODUCT
            )
            np.save(work / f"truth-{n}.npy", truth)
        del stored
        for kind in args.kinds.split(","):
            n = min(args.hnsw_n, args.n) if kind == "hnsw" else args.n
            row = {"n": n, **run_child("build", kind, str(work), str(n))}
            row.update(run_child("search", kind, str(work), str(n)))
            if kind == "ivfpq":  # the same file read into RAM, as before it was memory-mapped
                in_ram = run_child("search-in-ram", kind, str(work), str(n))
                figures = ("rss_open_mb", "rss_after_queries_mb", "rss_anon_after_queries_mb", "p50_ms")
                row["in_ram"] = {k: in_ram[k] for k in figures}
            results["kinds"][kind] = row
            print(
                f"{kind:<6} n={n:>9,} build {row['build_s']:>7.1f} s  recall@10 {row['recall_at_10']:.3f}  "
                f"p50 {row['p50_ms']:.2f} ms  p95 {row['p95_ms']:.2f} ms  RSS open {row['rss_open_mb']} MB "
                f"(after queries {row['rss_after_queries_mb']} MB, anon {row['rss_anon_after_queries_mb']} MB"
                f"{', mapped' if row['mapped'] else ''})  "
                f"serialised {row['serialised_bytes'] / 2**20:.0f} MB",
                flush=True,
            )
            if kind == "ivfpq":
                print(f"       read into RAM instead of mapped: {row['in_ram']}")
                print(f"       {row['description']}")
    if args.real:
        results["real"] = real_embeddings_check(args.real)
        print(f"real embeddings: {results['real']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
