"""What MaxSim reranking adds to a search, on a quiet machine: the time of
``MaxSimReranker.scores`` over the hybrid top ``depth`` passages (no per-note cap) for the first
12 held-out questions, at depth 10 / 20 / 30. The first stage's own latency is in bench_memory.

Run: .venv/bin/python bench/bench_rerank_latency.py
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import DOC_QUESTIONS  # noqa: E402
from doc_corpus import build_doc_corpus  # noqa: E402

from app.config import MemoryConfig  # noqa: E402
from app.memory import Memory  # noqa: E402
from rag.embedder import SentenceTransformerEmbedder  # noqa: E402
from rag.rerank import MaxSimReranker  # noqa: E402


def main() -> None:
    embedder = SentenceTransformerEmbedder()
    reranker = MaxSimReranker(embedder)
    questions = [json.loads(line)["question"] for line in DOC_QUESTIONS.read_text().splitlines()][:12]
    with tempfile.TemporaryDirectory() as tmp:
        build_doc_corpus(Path(tmp) / "doc")
        memory = Memory(Path(tmp) / "memory", MemoryConfig(), None, embedder)
        memory.add([Path(tmp) / "doc"])
        for depth in (10, 20, 30):
            times = []
            for question in questions:
                passages = [hit.text for hit in memory.search(question, k=depth, per_note=0)]
                started = time.perf_counter()
                reranker.scores(question, passages)
                times.append((time.perf_counter() - started) * 1000)
            p95 = sorted(times)[int(0.95 * len(times))]
            print(f"depth {depth}: MaxSim adds p50 {statistics.median(times):.0f} ms, p95 {p95:.0f} ms")


if __name__ == "__main__":
    main()
