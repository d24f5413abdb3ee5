"""Lantern's memory, measured: retrieval quality, ingest throughput and search latency.

1. Quality: the labelled questions in bench/data/memory_questions.jsonl over a corpus that ships
   on the machine (Python's pydoc topics and man pages, see memory_corpus.py). recall@5 and
   MRR@10 at document level for BM25 alone, dense alone and Lantern's hybrid pipeline, on the
   dev half (used for tuning), the test half (not used for tuning) and all questions.
2. Ingest: `memory add` of that corpus (load, chunk, embed, index, encrypted commit) versus bare
   SentenceTransformer.encode of exactly the same chunk texts, alternating, same process.
3. Latency: hybrid search p50/p95 with the query embedding included, at --chunks chunks
   (synthetic unit vectors; chunk texts sampled from the corpus so BM25 sees real vocabulary),
   for the index Lantern picks at that size and for exact search at the same size.

Run: .venv/bin/python bench/bench_memory.py [--chunks 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from memory_corpus import build_corpus  # noqa: E402

from app.config import MemoryConfig  # noqa: E402
from app.memory import Memory  # noqa: E402
from rag.embedder import SentenceTransformerEmbedder  # noqa: E402
from rag.retrieval import Retriever  # noqa: E402
from rag.store import FileEntry, MemoryStore, contextual_text  # noqa: E402

QUESTIONS = Path(__file__).resolve().parent / "data" / "memory_questions.jsonl"
PASSPHRASE = b"benchmark passphrase"


def evaluate(memory: Memory, questions: list[dict]) -> dict:
    """recall@5 and MRR@10 per mode and split; a hit is any chunk of the labelled file."""
    results: dict = {}
    for mode in ("lexical", "dense", "hybrid"):
        per_split: dict[str, list[tuple[float, float]]] = {"dev": [], "test": [], "all": []}
        for q in questions:
            sources = [h.source for h in memory.search(q["question"], k=10, mode=mode)]
            rank = next((i + 1 for i, s in enumerate(sources) if s == q["source"]), None)
            recall5 = 1.0 if rank is not None and rank <= 5 else 0.0
            rr = 1.0 / rank if rank is not None else 0.0
            per_split[q["split"]].append((recall5, rr))
            per_split["all"].append((recall5, rr))
        results[mode] = {
            split: {
                "recall@5": round(statistics.fmean(r for r, _ in rows), 3),
                "mrr@10": round(statistics.fmean(m for _, m in rows), 3),
                "n": len(rows),
            }
            for split, rows in per_split.items()
        }
    return results


def ingest_throughput(corpus: Path, embedder: SentenceTransformerEmbedder, rounds: int) -> dict:
    lantern_rates, bare_rates, chunks = [], [], 0
    texts: list[str] = []
    for round_ in range(rounds):
        for which in ("lantern", "bare") if round_ % 2 == 0 else ("bare", "lantern"):
            if which == "lantern":
                with tempfile.TemporaryDirectory() as home:
                    memory = Memory(Path(home) / "memory", MemoryConfig(), lambda: PASSPHRASE, embedder)
                    memory.init_encrypted(PASSPHRASE)
                    started = time.perf_counter()
                    memory.add([corpus])
                    elapsed = time.perf_counter() - started
                    store = memory.store
                    chunks = store.chunk_count
                    texts = [
                        contextual_text(store.files[c.path].relative, c.headings, c.text)
                        for c in (store.chunk(i) for e in store.files.values() for i in e.chunk_ids)
                    ]
                    lantern_rates.append(chunks / elapsed)
            else:
                if not texts:
                    continue  # the first round learns the chunk texts from Lantern's run
                started = time.perf_counter()
                embedder.model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True)
                bare_rates.append(len(texts) / (time.perf_counter() - started))
    lantern, bare = statistics.median(lantern_rates), statistics.median(bare_rates)
    return {
        "chunks": chunks,
        "lantern_chunks_per_s": round(lantern, 1),
        "bare_encode_chunks_per_s": round(bare, 1),
        "ratio": round(lantern / bare, 3),
        "runs": {"lantern": [round(r, 1) for r in lantern_rates], "bare": [round(r, 1) for r in bare_rates]},
    }


def synthetic_store(directory: Path, corpus_memory: Memory, chunks: int, dimension: int) -> MemoryStore:
    """A plain store of ``chunks`` chunks: random unit vectors, texts sampled from the real corpus."""
    rng = np.random.default_rng(7)
    corpus_store = corpus_memory.store
    sentences = [
        s.strip()
        for e in corpus_store.files.values()
        for i in e.chunk_ids
        for s in corpus_store.chunk(i).text.split(".")
        if len(s.split()) > 4
    ]
    store = MemoryStore.open(directory)
    store.bind_embedder("all-MiniLM-L6-v2", dimension)
    store.add_root("/synthetic")
    per_file = 1000
    for f in range(chunks // per_file):
        vectors = rng.standard_normal((per_file, dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [". ".join(random.Random(f * per_file + j).sample(sentences, 4)) for j in range(per_file)]
        path = f"/synthetic/file-{f:05}.txt"
        entry = FileEntry("/synthetic", f"file-{f:05}.txt", "0" * 64, 0, 0)
        store.put_file(path, entry, [(("Synthetic",), t) for t in texts], vectors)
    store.commit()
    return store


def latency(store: MemoryStore, embedder, queries: list[str], repeats: int = 3) -> dict:
    retriever = Retriever(store, embedder)
    retriever.search(queries[0], 5)  # warm: first FAISS/BM25 touch
    samples = []
    for _ in range(repeats):
        for q in queries:
            started = time.perf_counter()
            retriever.search(q, 5)
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 2),
        "queries": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()

    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    embedder = SentenceTransformerEmbedder()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        files = build_corpus(corpus)
        memory = Memory(Path(tmp) / "memory", MemoryConfig(), lambda: b"", embedder)
        report = memory.add([corpus])
        print(f"corpus: {files} files, {memory.store.chunk_count} chunks; {report.summary()}")
        print(f"questions: {len(questions)}")

        quality = evaluate(memory, questions)
        print("\nretrieval quality (document level)")
        print(f"{'method':<10} {'split':<5} {'recall@5':>9} {'MRR@10':>8}")
        for mode, splits in quality.items():
            for split, row in splits.items():
                print(f"{mode:<10} {split:<5} {row['recall@5']:>9.3f} {row['mrr@10']:>8.3f}")

        if not args.skip_ingest:
            ingest = ingest_throughput(corpus, embedder, args.rounds)
            print(f"\ningest: {ingest}")

        queries = [q["question"] for q in questions]
        big = synthetic_store(Path(tmp) / "big", memory, args.chunks, embedder.dimension)
        started = time.perf_counter()
        reopened = MemoryStore.open(big.directory)
        reopened.chunk(0)
        load_s = time.perf_counter() - started
        chosen = latency(reopened, embedder, queries)
        print(f"\nsearch at {reopened.chunk_count} chunks, index {reopened.index_description}: {chosen}")
        print(f"  (opening that store took {load_s:.2f} s)")
        reopened.dense._rebuild("exact")
        exact = latency(reopened, embedder, queries)
        print(f"same store, exact search: {exact}")
        embed_only = []
        for q in queries:
            started = time.perf_counter()
            embedder.embed([q])
            embed_only.append((time.perf_counter() - started) * 1000)
        print(f"query embedding alone: p50 {statistics.median(embed_only):.2f} ms")


if __name__ == "__main__":
    main()
