"""Generated passages and their real embeddings, cached and resumable.

Passages are 2-5 sentences drawn at random from Python's bundled documentation (pydoc's topics),
seeded, so the first N of a million are always the same N. They are embedded with the bundled
all-MiniLM-L6-v2 in blocks; each block is saved as it finishes (write, then rename), so a run that
is stopped or killed goes on from the last saved block. On 2 cores MiniLM embeds about 40 such
passages a second: a million takes about 7 hours, so the cache is meant to be filled by a
low-priority background run (``nice -n 19``) that takes only the CPU nothing else wants.

Run: .venv/bin/python bench/real_passages.py --count 1000000 [--cache bench/out/real-passages]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "bench" / "out" / "real-passages"
BLOCK = 2_000
STORED_SEED, QUESTION_SEED = 0, 1  # questions come from another stream: none is a stored passage


def generated_passages(count: int, seed: int = STORED_SEED) -> list[str]:
    """Passages of 2-5 sentences drawn at random from Python's bundled documentation topics."""
    from pydoc_data.topics import topics

    sentences = [
        s.strip()
        for text in topics.values()
        for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
        if 40 <= len(s.strip()) <= 300
    ]
    rng = random.Random(seed)
    return [" ".join(rng.sample(sentences, rng.randint(2, 5))) for _ in range(count)]


def cached_blocks(cache: Path, seed: int) -> int:
    """How many consecutive blocks of this stream are already embedded."""
    done = 0
    while (cache / _block_name(seed, done)).exists():
        done += 1
    return done


def embedded_passages(count: int, seed: int = STORED_SEED, cache: Path = DEFAULT_CACHE) -> np.ndarray:
    """The real embeddings of the first ``count`` passages of a stream, embedding what is missing."""
    cache.mkdir(parents=True, exist_ok=True)
    blocks = -(-count // BLOCK)
    missing = range(cached_blocks(cache, seed), blocks)
    if missing:
        _embed_blocks(generated_passages(blocks * BLOCK, seed), missing, cache, seed)
    vectors = np.concatenate([np.load(cache / _block_name(seed, b)) for b in range(blocks)])
    return vectors[:count]


def _embed_blocks(passages: list[str], blocks: range, cache: Path, seed: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from rag.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    started, done = time.perf_counter(), 0
    for block in blocks:
        vectors = embedder.embed(passages[block * BLOCK : (block + 1) * BLOCK]).astype(np.float32)
        partial = cache / (_block_name(seed, block) + ".partial.npy")
        np.save(partial, vectors)
        partial.rename(cache / _block_name(seed, block))
        done += len(vectors)
        rate = done / (time.perf_counter() - started)
        print(f"block {block + 1}/{blocks.stop}: {rate:.1f} passages/s", flush=True)


def _block_name(seed: int, block: int) -> str:
    return f"seed{seed}-block{block:05}.npy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--questions", type=int, default=BLOCK)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    embedded_passages(args.questions, QUESTION_SEED, args.cache)
    embedded_passages(args.count, STORED_SEED, args.cache)


if __name__ == "__main__":
    main()
