"""The reranking stage, measured: Lantern's first stage, then its top passages rescored.

Rerankers (rag/rerank.py): MaxSim late interaction over all-MiniLM-L6-v2's token vectors, and
the bundled SmolLM2-135M as a yes/no judge. For each question the first stage's top 50 passages
are fetched once and each reranker scores the top ``max(depths)`` once (a passage's score does
not depend on the others), so every depth and blend weight is read from the same scores.

Settings (reranker, depth, weight) are chosen on the **dev** split of memory_questions.jsonl
only, by recall@5 + MRR@10 (ties: the smaller depth, then the larger weight); the test split and
the held-out doc_questions.jsonl only report the chosen setting. The judge is slow, so it runs on
dev only unless --judge-everywhere.

Metric as bench_memory.evaluate: document level, recall@5 and MRR@10. ``/cap1``: at most one
passage per file, taken from the (reranked) top 50, applied after the rerank.

Run: .venv/bin/python bench/bench_rerank.py [--cache DIR] [--depths 10,20,30] [--judge-depth 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_memory import DOC_QUESTIONS, QUESTIONS, ranked_sources  # noqa: E402
from doc_corpus import build_doc_corpus, memory_name  # noqa: E402
from memory_corpus import build_corpus  # noqa: E402

from app.bundled import bundled_model_path  # noqa: E402
from app.config import MemoryConfig  # noqa: E402
from app.memory import Memory  # noqa: E402
from rag.embedder import SentenceTransformerEmbedder  # noqa: E402
from rag.rerank import LlmJudgeReranker, MaxSimReranker, Reranker, RerankStage  # noqa: E402
from rag.store import contextual_text  # noqa: E402

WEIGHTS = (0.25, 0.5, 0.75, 1.0)
FIRST_STAGE = 50


@dataclass
class Candidates:
    """One question's first stage: its top passages, their files, texts and fused scores."""

    question: dict
    sources: list[str]
    texts: list[str]
    scores: np.ndarray
    rerank: dict  # reranker name -> scores of the top passages


def first_stage(memory: Memory, questions: list[dict]) -> list[Candidates]:
    store, out = memory.store, []
    for q in questions:
        hits = memory.search(q["question"], k=FIRST_STAGE, mode="hybrid")
        texts = []
        for hit in hits:
            chunk = store.chunk(hit.chunk_id)
            texts.append(contextual_text(store.files[chunk.path].relative, chunk.headings, chunk.text))
        scores = np.array([h.score for h in hits], dtype=np.float32)
        out.append(Candidates(q, [h.source for h in hits], texts, scores, {}))
    return out


def score_all(cands: list[Candidates], reranker: Reranker, depth: int, saved: Path | None) -> list[float]:
    """Each question's top ``depth`` scored (read back from ``saved`` when a run wrote it for the
    same first stage); the milliseconds per question of the questions scored now."""
    known = json.loads(saved.read_text()) if saved is not None and saved.exists() else {}
    times = []
    for c in cands:
        key = c.question["question"]
        if known.get(key, {}).get("texts") == c.texts[:depth]:
            c.rerank[reranker.name] = np.array(known[key]["scores"], dtype=np.float32)
            continue
        started = time.perf_counter()
        c.rerank[reranker.name] = reranker.scores(key, c.texts[:depth])
        times.append((time.perf_counter() - started) * 1000)
        known[key] = {"texts": c.texts[:depth], "scores": c.rerank[reranker.name].tolist()}
    if saved is not None:
        saved.write_text(json.dumps(known))
    return times


def time_depths(cands: list[Candidates], reranker: Reranker, depths: list[int]) -> dict[int, float]:
    """Median ms per query of the reranker alone at each depth, over these questions."""
    out = {}
    for depth in depths:
        times = []
        for c in cands:
            started = time.perf_counter()
            reranker.scores(c.question["question"], c.texts[:depth])
            times.append((time.perf_counter() - started) * 1000)
        out[depth] = round(statistics.median(times), 1)
    return out


def order(c: Candidates, reranker: str | None, depth: int, weight: float, cap: bool) -> list[str]:
    """The files of the top 10 after the rerank (``reranker`` None: the first stage)."""
    sources = c.sources
    if reranker is not None:
        stage = RerankStage(reranker=None, depth=depth, weight=weight)  # type: ignore[arg-type]
        head = min(depth, len(sources))
        blended = stage.blend(c.rerank[reranker][:head], c.scores[:head])
        new = np.argsort(-blended, kind="stable")
        sources = [sources[i] for i in new] + sources[head:]
    if cap:
        kept = []
        for s in sources:
            if s not in kept:
                kept.append(s)
        sources = kept
    return sources[:10]


def metrics(rankings: list[tuple[dict, list[str]]], name_of, split: str) -> tuple[float, float, int]:
    rows = []
    for q, sources in rankings:
        if split != "all" and q["split"] != split:
            continue
        rank = next((i + 1 for i, s in enumerate(sources) if s == name_of(q["source"])), None)
        rows.append((1.0 if rank is not None and rank <= 5 else 0.0, 1.0 / rank if rank else 0.0))
    if not rows:
        return (float("nan"), float("nan"), 0)
    return (
        round(statistics.fmean(r for r, _ in rows), 3),
        round(statistics.fmean(m for _, m in rows), 3),
        len(rows),
    )


def choose(cands: list[Candidates], reranker: str, depths: list[int]) -> tuple[int, float, list]:
    """The depth and weight best on dev (with the per-file cap Lantern ships); the grid."""
    grid = []
    for depth in depths:
        for weight in WEIGHTS:
            ranked = [(c.question, order(c, reranker, depth, weight, cap=True)) for c in cands]
            recall, mrr, _ = metrics(ranked, lambda s: s, "dev")
            grid.append((recall + mrr, -depth, weight, recall, mrr))
    best = max(grid)
    return -best[1], best[2], grid


def print_rows(title: str, rows: list[tuple[str, tuple[float, float, int]]]) -> None:
    print(f"\n{title}")
    print(f"{'method':<34} {'recall@5':>9} {'MRR@10':>8} {'n':>4}")
    for name, (recall, mrr, n) in rows:
        print(f"{name:<34} {recall:>9.3f} {mrr:>8.3f} {n:>4}")


def open_memory(cache: Path, name: str, build, embedder) -> Memory:
    corpus, directory = cache / name / "corpus", cache / name / "memory"
    memory = Memory(directory, MemoryConfig(), None, embedder)
    if not (cache / name / "done").exists():
        build(corpus)
        memory.add([corpus])
        (cache / name / "done").write_text("built\n")
    return memory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, help="build the two collections here once and reuse them")
    parser.add_argument("--depths", default="10,20,30")
    parser.add_argument("--judge-depth", type=int, default=10)
    parser.add_argument("--no-judge", action="store_true")
    parser.add_argument("--timed", type=int, default=20, help="questions per set timed at each depth")
    parser.add_argument("--judge-questions", type=int, default=0, help="judge only the first N dev ones")
    parser.add_argument("--sets", default="tuning,doc")
    parser.add_argument("--judge-everywhere", action="store_true", help="also on test and held out")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]

    tmp = tempfile.TemporaryDirectory()
    cache = args.cache or Path(tmp.name)
    cache.mkdir(parents=True, exist_ok=True)
    embedder = SentenceTransformerEmbedder()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    sets = {
        "tuning": (QUESTIONS, build_corpus, lambda s: s),
        "doc": (DOC_QUESTIONS, build_doc_corpus, memory_name),
    }
    maxsim = MaxSimReranker(embedder)
    judge = None if args.no_judge else LlmJudgeReranker(bundled_model_path(), threads=os.cpu_count() or 0)
    results: dict = {}

    def saved(name: str, reranker: str) -> Path | None:
        return cache / name / f"scores-{reranker}.json" if args.cache else None

    for name in args.sets.split(","):
        path, build, name_of = sets[name]
        questions = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        memory = open_memory(cache, name, build, embedder)
        cands = first_stage(memory, questions)
        print(f"{name}: first stage done", flush=True)
        score_all(cands, maxsim, max(depths), saved(name, "maxsim"))
        # Cost per depth: the first --timed questions again, each depth in turn.
        timing = time_depths(cands[: args.timed], maxsim, depths) if args.timed else {}
        tokens = [len(v) for v in embedder.token_vectors([t for c in cands[:20] for t in c.texts[:5]])]
        judge_ms = None
        if judge is not None:
            on = [c for c in cands if args.judge_everywhere or c.question["split"] == "dev"]
            on = on[: args.judge_questions or None]
            judge_times = score_all(on, judge, args.judge_depth, saved(name, "judge"))
            judge_ms = round(statistics.median(judge_times), 1) if judge_times else None
        baselines = {
            mode: [(q, ranked_sources(memory, q["question"], mode)) for q in questions]
            for mode in ("lexical", "dense", "rrf")
        }
        results[name] = (questions, cands, baselines, name_of, timing, judge_ms, tokens)
        print(
            f"{name}: {memory.store.chunk_count} passages, {len(questions)} questions; maxsim ms/query "
            f"by depth {timing}; judge ms/query at depth {args.judge_depth}: {judge_ms}; "
            f"mean passage tokens {statistics.fmean(tokens):.0f}"
        )

    questions, cands, baselines, name_of, *_ = results["tuning"]
    depth, weight, grid = choose(cands, "maxsim", depths)
    print("\ndev grid, maxsim with cap1 (depth, weight: recall@5 / MRR@10):")
    for _, d, w, recall, mrr in sorted(grid, key=lambda g: (-g[1], g[2])):
        print(f"  {-d:>3} {w:>5}: {recall:.3f} / {mrr:.3f}")
    print(f"chosen on dev: maxsim depth {depth}, weight {weight}")
    judge_choice = None
    if judge is not None:
        jgrid = []
        for w in WEIGHTS:
            ranked = [
                (c.question, order(c, "judge", args.judge_depth, w, True))
                for c in cands
                if "judge" in c.rerank
            ]
            recall, mrr, _ = metrics(ranked, lambda s: s, "dev")
            jgrid.append((recall + mrr, w, recall, mrr))
        print(
            "dev grid, judge with cap1 (weight: recall@5 / MRR@10): "
            + ", ".join(f"{w}: {r:.3f} / {m:.3f}" for _, w, r, m in jgrid)
        )
        judge_choice = max(jgrid)[1]

    for name, (_questions, cands, baselines, name_of, *_rest) in results.items():
        for split in ("dev", "test") if name == "tuning" else ("test",):
            rows = [(f"{m} (bench_memory)", metrics(r, name_of, split)) for m, r in baselines.items()]
            for cap in (False, True):
                suffix = "/cap1" if cap else ""
                rows.append(
                    (
                        f"Lantern first stage{suffix}",
                        metrics([(c.question, order(c, None, 0, 0, cap)) for c in cands], name_of, split),
                    )
                )
                rows.append(
                    (
                        f"+ maxsim d{depth} w{weight}{suffix}",
                        metrics(
                            [(c.question, order(c, "maxsim", depth, weight, cap)) for c in cands],
                            name_of,
                            split,
                        ),
                    )
                )
                judged = [c for c in cands if "judge" in c.rerank and c.question["split"] == split]
                if judge_choice is not None and judged:
                    rows.append(
                        (
                            f"+ judge d{args.judge_depth} w{judge_choice}{suffix}",
                            metrics(
                                [
                                    (c.question, order(c, "judge", args.judge_depth, judge_choice, cap))
                                    for c in judged
                                ],
                                name_of,
                                split,
                            ),
                        )
                    )
            print_rows(f"{name} / {split}", rows)


if __name__ == "__main__":
    main()
