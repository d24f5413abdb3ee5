"""`lantern memory tune`, measured: its own held-out pairs' MRR@10 before and after, the wall time
of the tune on this machine, and, as a check that fitting the notes' own pairs does not cost real
questions, document-level MRR@10 and recall@5 of the labelled questions in
bench/data/memory_questions.jsonl (dense and hybrid), before and after. Nothing here chooses a
setting; bench/data/doc_questions.jsonl is not used.

The corpus is memory_corpus.py's (pydoc topics and man pages); --subset keeps one of its folders
(pydoc: 79 notes, about 700 passages, a tune of minutes on 2 cores).

Run: .venv/bin/python bench/bench_memory_tune.py [--corpus DIR] [--subset pydoc] [--minutes 10]
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

from memory_corpus import build_corpus  # noqa: E402

from app.config import MemoryConfig  # noqa: E402
from app.memory import Memory  # noqa: E402
from rag.tuning import TuneSettings  # noqa: E402

QUESTIONS = Path(__file__).resolve().parent / "data" / "memory_questions.jsonl"


def question_scores(memory: Memory, questions: list[dict], mode: str) -> dict[str, float]:
    """Document-level MRR@10 and recall@5: the rank of the labelled file among the top passages' files."""
    reciprocal, found = [], []
    for question in questions:
        files: list[str] = []
        for hit in memory.search(question["question"], k=50, mode=mode):
            if hit.source not in files:
                files.append(hit.source)
        rank = files.index(question["relative"]) if question["relative"] in files else None
        reciprocal.append(1 / (rank + 1) if rank is not None and rank < 10 else 0.0)
        found.append(rank is not None and rank < 5)
    count = max(1, len(questions))
    return {"mrr@10": round(sum(reciprocal) / count, 4), "recall@5": round(sum(found) / count, 4)}


def measure_questions(memory: Memory, questions: list[dict]) -> dict[str, dict[str, float]]:
    results = {}
    for split in ("dev", "test"):
        chosen = [q for q in questions if q["split"] == split]
        for mode in ("dense", "hybrid"):
            results[f"{split}/{mode}"] = question_scores(memory, chosen, mode)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="a corpus built by memory_corpus.py (built if absent)")
    parser.add_argument("--subset", default="pydoc", help="one folder of the corpus, or '' for all")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of the tune")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    corpus = args.corpus or work / "corpus"
    if not corpus.exists():
        build_corpus(corpus)
    notes = corpus / args.subset if args.subset else corpus
    prefix = f"{args.subset}/" if args.subset else ""
    questions = []
    for line in QUESTIONS.read_text(encoding="utf-8").splitlines():
        question = json.loads(line)
        if question["source"].startswith(prefix):
            questions.append({**question, "relative": question["source"][len(prefix) :]})

    memory = Memory(work / "memory", MemoryConfig(), None)
    started = time.monotonic()
    memory.add([notes])
    print(f"added {notes}: {memory.store.chunk_count} passages in {time.monotonic() - started:.0f} s")
    before = measure_questions(memory, questions)

    def step(done: int, total: int, loss: float) -> None:
        print(f"  step {done}/{total} loss {loss:.3f} at {time.monotonic() - started:.0f} s", flush=True)

    started = time.monotonic()
    report = memory.tune(TuneSettings(max_minutes=args.minutes), step)
    wall = time.monotonic() - started
    after = measure_questions(memory, questions)

    print(
        f"pairs {report.pairs} from {report.notes} notes, held out {report.held_out_pairs} "
        f"from {report.held_out_notes}; {report.steps} steps; tune wall {wall:.0f} s"
    )
    print(
        f"held-out pairs MRR@10 {report.before.mrr:.3f} -> {report.after.mrr:.3f}, "
        f"recall@1 {report.before.recall_at_1:.3f} -> {report.after.recall_at_1:.3f}; "
        f"adopted: {report.adopted} ({report.embedder})"
    )
    print(f"questions ({len(questions)} with sources in {notes.name}), before -> after:")
    for key in before:
        b, a = before[key], after[key]
        print(
            f"  {key:12} MRR@10 {b['mrr@10']:.3f} -> {a['mrr@10']:.3f}   "
            f"recall@5 {b['recall@5']:.3f} -> {a['recall@5']:.3f}"
        )


if __name__ == "__main__":
    main()
