"""Lantern's memory, measured: retrieval quality, ingest throughput and search latency.

1. Quality: the labelled questions in bench/data/memory_questions.jsonl over a corpus that ships
   on the machine (Python's pydoc topics and man pages, see memory_corpus.py), and the held-out
   bench/data/doc_questions.jsonl over prose in /usr/share/doc (doc_corpus.py; never used to
   choose a setting). recall@5 and MRR@10 at document level for BM25 alone, dense alone, plain
   reciprocal rank fusion (k = 60) and Lantern's pipeline, per split.
2. Ingest: `memory add` of that corpus (load, chunk, embed, index, encrypted commit) versus bare
   SentenceTransformer.encode of exactly the same chunk texts, alternating, same process.
3. Latency: hybrid search p50/p95 with the query embedding included, at --chunks chunks
   (synthetic unit vectors; chunk texts sampled from the corpus so BM25 sees real vocabulary),
   for the index Lantern picks at that size and for exact search at the same size.

Run: .venv/bin/python bench/bench_memory.py [--chunks 100000] [--rounds 2] [--quality-only]
"""

from __future__ import annotations

import argparse
import collections
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
from doc_corpus import build_doc_corpus, memory_name  # noqa: E402
from memory_corpus import build_corpus  # noqa: E402

from app.config import MemoryConfig  # noqa: E402
from app.home_key import HomeKey  # noqa: E402
from app.memory import Memory  # noqa: E402
from rag.embedder import SentenceTransformerEmbedder  # noqa: E402
from rag.retrieval import Retriever  # noqa: E402
from rag.store import FileEntry, MemoryStore, contextual_text  # noqa: E402

QUESTIONS = Path(__file__).resolve().parent / "data" / "memory_questions.jsonl"
DOC_QUESTIONS = Path(__file__).resolve().parent / "data" / "doc_questions.jsonl"
PASSPHRASE = b"benchmark passphrase"


RRF_K = 60  # the constant of the original reciprocal rank fusion paper, untuned
MODES = ("lexical", "dense", "rrf", "hybrid")
# Beside the defaults: plain RRF with at most one passage per file, and Lantern's hybrid with
# no limit (cap0) or two per file (its default, chosen on the dev half, is one per file).
CAPPED = ("rrf/cap1", "hybrid/cap0", "hybrid/cap2")


def ranked_sources(memory: Memory, question: str, mode: str, k: int = 10) -> list[str]:
    """The files of the top ``k`` passages, best first. ``rrf`` is the plain baseline: BM25's and
    dense search's top 50 fused by reciprocal rank (k = 60), nothing tuned. ``MODE/capN`` keeps
    at most N passages per file (hybrid: Lantern's own ``per_note``; others: from their top 50)."""
    if mode.startswith("hybrid/cap"):
        per_note = int(mode.removeprefix("hybrid/cap"))
        return [h.source for h in memory.search(question, k=k, per_note=per_note)]
    if "/cap" in mode:
        base, cap = mode.split("/cap")
        kept, seen = [], collections.Counter()
        for source in ranked_sources(memory, question, base, k=50):
            seen[source] += 1
            if seen[source] <= int(cap):
                kept.append(source)
        return kept[:k]
    if mode != "rrf":
        return [h.source for h in memory.search(question, k=k, mode=mode)]
    fused: dict[int, float] = {}
    sources: dict[int, str] = {}
    for first_stage in ("lexical", "dense"):
        for rank, hit in enumerate(memory.search(question, k=50, mode=first_stage), start=1):
            fused[hit.chunk_id] = fused.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            sources[hit.chunk_id] = hit.source
    best = sorted(fused, key=fused.get, reverse=True)[:k]
    return [sources[chunk] for chunk in best]


def evaluate(
    memory: Memory, questions: list[dict], name_of=lambda source: source, modes=MODES + CAPPED
) -> dict:
    """recall@5 and MRR@10 per mode and split; a hit is any chunk of the labelled file
    (``name_of`` maps a label to the name the memory reports)."""
    results: dict = {}
    for mode in modes:
        per_split: dict[str, list[tuple[float, float]]] = {"dev": [], "test": [], "all": []}
        for q in questions:
            sources = ranked_sources(memory, q["question"], mode)
            rank = next((i + 1 for i, s in enumerate(sources) if s == name_of(q["source"])), None)
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
            if rows
        }
    return results


def print_quality(title: str, quality: dict) -> None:
    print(f"\nretrieval quality (document level): {title}")
    print(f"{'method':<12} {'split':<5} {'recall@5':>9} {'MRR@10':>8} {'n':>4}")
    for mode, splits in quality.items():
        for split, row in splits.items():
            print(f"{mode:<12} {split:<5} {row['recall@5']:>9.3f} {row['mrr@10']:>8.3f} {row['n']:>4}")


def held_out_quality(embedder) -> dict:
    """The held-out set over /usr/share/doc (bench/data/doc_questions.jsonl): used for no choice."""
    questions = [json.loads(line) for line in DOC_QUESTIONS.read_text().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "doc"
        files = build_doc_corpus(corpus)
        memory = Memory(Path(tmp) / "memory", MemoryConfig(), None, embedder)
        report = memory.add([corpus])
        print(
            f"\nheld-out collection: {files} files of /usr/share/doc, {memory.store.chunk_count} chunks; "
            f"{report.summary()}; questions: {len(questions)}"
        )
        return evaluate(memory, questions, memory_name)


def ingest_throughput(corpus: Path, embedder: SentenceTransformerEmbedder, rounds: int) -> dict:
    lantern_rates, bare_rates, chunks = [], [], 0
    texts: list[str] = []
    for round_ in range(rounds):
        for which in ("lantern", "bare") if round_ % 2 == 0 else ("bare", "lantern"):
            if which == "lantern":
                with tempfile.TemporaryDirectory() as home:
                    key = HomeKey.create(Path(home), PASSPHRASE)
                    memory = Memory(Path(home) / "memory", MemoryConfig(), key, embedder)
                    memory.seal(key.data_cipher())
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
    parser.add_argument("--quality-only", action="store_true", help="retrieval quality only, on every set")
    args = parser.parse_args()

    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    embedder = SentenceTransformerEmbedder()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        files = build_corpus(corpus)
        memory = Memory(Path(tmp) / "memory", MemoryConfig(), None, embedder)
        report = memory.add([corpus])
        print(f"corpus: {files} files, {memory.store.chunk_count} chunks; {report.summary()}")
        print(f"questions: {len(questions)}")

        print_quality("pydoc + man pages (dev chose the fusion weight)", evaluate(memory, questions))
        print_quality("/usr/share/doc, held out (chose nothing)", held_out_quality(embedder))
        if args.quality_only:
            return

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
