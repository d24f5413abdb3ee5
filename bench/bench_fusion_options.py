"""Fusion options of issue 29, chosen on the DEV half of bench/data/memory_questions.jsonl only:
headings and titles as a field of their own (weights 0 to 0.5) and HyDE query expansion by the
bundled chat model (hybrid and dense, with and without). The chosen settings are then reported
on the test half and the held-out set by bench_memory.py; this script never reads them.

Run: .venv/bin/python bench/bench_fusion_options.py [--no-hyde]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import QUESTIONS  # noqa: E402
from memory_corpus import build_corpus  # noqa: E402

from app.bundled import bundled_model_path  # noqa: E402
from app.config import MemoryConfig  # noqa: E402
from app.engine import Engine  # noqa: E402
from app.memory import Memory  # noqa: E402
from app.query_expansion import hypothetical_passage  # noqa: E402
from rag.embedder import SentenceTransformerEmbedder  # noqa: E402
from rag.retrieval import FusionWeights, Retriever  # noqa: E402


def quality(retriever: Retriever, questions: list[dict], mode: str, expansions: list[str]) -> tuple:
    recall = reciprocal = 0.0
    for question, expansion in zip(questions, expansions, strict=True):
        hits = retriever.search(question["question"], 10, mode, expansion=expansion)
        sources = [hit.source for hit in hits]
        rank = next((i + 1 for i, s in enumerate(sources) if s == question["source"]), None)
        recall += rank is not None and rank <= 5
        reciprocal += 1 / rank if rank else 0.0
    return round(recall / len(questions), 3), round(reciprocal / len(questions), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-hyde", action="store_true", help="skip the chat model's expansions")
    args = parser.parse_args()
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    dev = [q for q in questions if q["split"] == "dev"]
    embedder = SentenceTransformerEmbedder()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        build_corpus(corpus)
        memory = Memory(Path(tmp) / "memory", MemoryConfig(), None, embedder)
        memory.add([corpus])
        none = [""] * len(dev)
        print(f"dev half: {len(dev)} questions, {memory.store.chunk_count} passages")
        print(f"{'option':<28} {'recall@5':>9} {'MRR@10':>8}")
        for weight in (0.0, 0.1, 0.2, 0.3, 0.5):
            retriever = Retriever(memory.store, embedder, FusionWeights(headings=weight))
            recall, mrr = quality(retriever, dev, "hybrid", none)
            print(f"{f'hybrid, headings {weight}':<28} {recall:>9.3f} {mrr:>8.3f}")
        if args.no_hyde:
            return
        engine = Engine(bundled_model_path(), context_length=2048)
        started = time.perf_counter()
        drafts = [hypothetical_passage(engine, q["question"]) for q in dev]
        per_question = (time.perf_counter() - started) / len(dev)
        retriever = Retriever(memory.store, embedder)
        for mode in ("hybrid", "dense"):
            for name, expansions in (("plain", none), ("HyDE", drafts)):
                recall, mrr = quality(retriever, dev, mode, expansions)
                print(f"{f'{mode}, {name}':<28} {recall:>9.3f} {mrr:>8.3f}")
        print(f"HyDE draft: {per_question * 1000:.0f} ms a question (bundled model, greedy, 96 tokens)")


if __name__ == "__main__":
    main()
