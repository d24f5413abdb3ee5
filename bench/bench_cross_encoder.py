"""Issue 29, item 2, option (c): a small cross-encoder trained on the collection's own notes.

all-MiniLM-L6-v2's encoder with a fresh one-logit head, trained per collection on the pairs
`memory tune` makes (heading path -> passage, first sentence -> rest; rag/tuning.py) against a
random passage of another note, binary cross-entropy, one pass over at most --pairs pairs. Then
it rescores the hybrid top --depth passages; at most one passage per note after. Weight (its
score alone, or half and half with the first stage) chosen on the tuning set's dev half only.

Run: .venv/bin/python bench/bench_cross_encoder.py [--pairs 600] [--depth 10]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_memory import DOC_QUESTIONS, QUESTIONS  # noqa: E402
from doc_corpus import build_doc_corpus, memory_name  # noqa: E402
from memory_corpus import build_corpus  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from app.config import MemoryConfig  # noqa: E402
from app.memory import Memory  # noqa: E402
from rag.embedder import SentenceTransformerEmbedder, bundled_embedder_path  # noqa: E402
from rag.tuning import make_pairs  # noqa: E402

MAX_LENGTH = 256


def train(memory: Memory, pairs_at_most: int) -> tuple:
    store = memory.store
    chunks = store.chunks()
    pairs = make_pairs((chunk, store.files[chunk.path].relative) for chunk in chunks)
    rng = random.Random(29)
    rng.shuffle(pairs)
    pairs = pairs[:pairs_at_most]
    examples = []
    for pair in pairs:
        other = rng.choice(chunks)
        while store.files[other.path].relative == pair.note:
            other = rng.choice(chunks)
        examples += [(pair.query, pair.passage, 1.0), (pair.query, other.text, 0.0)]
    rng.shuffle(examples)
    folder = str(bundled_embedder_path())
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, local_files_only=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    started = time.perf_counter()
    for start in range(0, len(examples), 16):
        batch = examples[start : start + 16]
        inputs = tokenizer(
            [q for q, _, _ in batch],
            [p for _, p, _ in batch],
            truncation=True,
            max_length=MAX_LENGTH,
            padding=True,
            return_tensors="pt",
        )
        loss = loss_fn(model(**inputs).logits.squeeze(-1), torch.tensor([y for _, _, y in batch]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return tokenizer, model, len(examples), time.perf_counter() - started


def scores(tokenizer, model, query: str, passages: list[str]) -> np.ndarray:
    with torch.no_grad():
        inputs = tokenizer(
            [query] * len(passages),
            passages,
            truncation=True,
            max_length=MAX_LENGTH,
            padding=True,
            return_tensors="pt",
        )
        return model(**inputs).logits.squeeze(-1).numpy()


def min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def evaluate(memory, questions, name_of, tokenizer, model, depth, weights) -> dict:
    rows: dict = {}
    spent = []
    for q in questions:
        hits = memory.search(q["question"], k=depth, per_note=0)
        started = time.perf_counter()
        rerank = scores(tokenizer, model, q["question"], [h.text for h in hits])
        spent.append(time.perf_counter() - started)
        first = np.array([h.score for h in hits], dtype=np.float32)
        for weight in weights:
            blended = weight * min_max(rerank) + (1 - weight) * min_max(first)
            sources, seen = [], set()
            for i in np.argsort(-blended, kind="stable"):
                if hits[i].source not in seen:
                    seen.add(hits[i].source)
                    sources.append(hits[i].source)
            rank = next((i + 1 for i, s in enumerate(sources) if s == name_of(q["source"])), None)
            row = rows.setdefault((q["split"], weight), [0.0, 0.0, 0])
            row[0] += rank is not None and rank <= 5
            row[1] += 1 / rank if rank else 0.0
            row[2] += 1
    for (split, weight), (recall, rr, n) in sorted(rows.items()):
        print(f"  {split:<5} weight {weight:.1f}: recall@5 {recall / n:.3f}  MRR@10 {rr / n:.3f}  (n {n})")
    print(f"  rescoring {depth} passages: median {1000 * float(np.median(spent)):.0f} ms a question")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--depth", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(29)
    embedder = SentenceTransformerEmbedder()
    tuning = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    held_out = [json.loads(line) for line in DOC_QUESTIONS.read_text().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        for name, build, questions, name_of in (
            ("tuning set (pydoc + man)", build_corpus, tuning, lambda s: s),
            ("held out (/usr/share/doc)", build_doc_corpus, held_out, memory_name),
        ):
            corpus = Path(tmp) / name.split()[0]
            build(corpus)
            memory = Memory(Path(tmp) / f"memory-{name.split()[0]}", MemoryConfig(), None, embedder)
            memory.add([corpus])
            tokenizer, model, examples, seconds = train(memory, args.pairs)
            print(f"{name}: trained on {examples} examples from its own notes in {seconds:.0f} s")
            evaluate(memory, questions, name_of, tokenizer, model, args.depth, (1.0, 0.5))


if __name__ == "__main__":
    main()
