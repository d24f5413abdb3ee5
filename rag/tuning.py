"""Tuning the embedder on the notes themselves: pairs made from the notes, a held-out share of them
to measure on, and a short in-batch-negatives training run on the CPU.

A pair is a query and the passage it should find: a section's heading path and its text (when
the heading says something), or a passage's first sentence and the rest of it. Notes are split
into training and held-out ones by a hash of their name (the path shown as a source), so a note
held out once stays held out the next time, and no sentence of a held-out note is trained on.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rag.embedder import SentenceTransformerEmbedder, model_weights, tuned_embedder_name
from rag.store import Chunk

MIN_NOTES = 5  # fewer notes than this leave nothing meaningful to hold out
MIN_PAIRS = 20
RANK_CUTOFF = 10  # MRR@10
COMMON_HEADING_NOTES, COMMON_HEADING_SHARE = 8, 0.05  # a heading in more notes says too little

# Headings that name a place in a file, not what it is about: no pair is made from them.
_GENERIC_HEADING = re.compile(
    r"^(page|part|section|chapter|exchange|slide|notes?|introduction|summary|misc|todo|untitled)\b[\s\d.:-]*$",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_WORD = re.compile(r"[^\W\d_]{3,}")

TrainingProgress = Callable[[int, int, float], None]  # (step, steps, loss)


@dataclass(frozen=True)
class TrainingPair:
    query: str
    passage: str
    note: str  # the note it came from, as its source is shown: the unit of the held-out split
    chunk_id: int
    kind: Literal["heading", "sentence"]


@dataclass(frozen=True)
class PairScore:
    """How well an embedder finds the right passage for held-out queries among all passages."""

    mrr: float  # mean reciprocal rank, 0 past RANK_CUTOFF
    recall_at_1: float


@dataclass(frozen=True)
class TuneSettings:
    epochs: int = 2
    batch_size: int = 16  # the in-batch negatives: each query's passage against the 15 others
    learning_rate: float = 5e-5
    max_minutes: float = 10.0  # training stops here even mid-epoch; the held-out guard still decides
    held_out_share: float = 0.2
    max_seq_length: int = 128  # tokens per text while training; a quarter of the cost of 256
    seed: int = 29


def make_pairs(chunks: Iterable[tuple[Chunk, str]]) -> list[TrainingPair]:
    """Heading → passage and first sentence → rest, from every (chunk, note name) that offers one."""
    chunks = list(chunks)
    headings = {chunk.id: _heading_query(chunk.headings) for chunk, _ in chunks}
    notes_with = Counter(heading for _, heading in {(note, headings[c.id]) for c, note in chunks})
    shared_limit = max(COMMON_HEADING_NOTES, COMMON_HEADING_SHARE * len({note for _, note in chunks}))
    pairs: list[TrainingPair] = []
    sections_seen: set[tuple[str, tuple[str, ...]]] = set()
    for chunk, note in chunks:
        section = (chunk.path, chunk.headings)
        # Only a section's first chunk: the later ones open with the overlap of the one before.
        if section in sections_seen:
            continue
        sections_seen.add(section)
        text = " ".join(chunk.text.split())
        heading = headings[chunk.id]
        # A heading many notes share ("DESCRIPTION", "Meeting notes") names a kind of section.
        if _words(heading) >= 1 and notes_with[heading] <= shared_limit and _words(text) >= 8:
            pairs.append(TrainingPair(heading, text, note, chunk.id, "heading"))
        first, rest = _first_sentence(text)
        if 4 <= _words(first) <= 40 and _words(rest) >= 8:
            pairs.append(TrainingPair(first, rest, note, chunk.id, "sentence"))
    return pairs


def _heading_query(headings: tuple[str, ...]) -> str:
    return " › ".join(h.strip() for h in headings if not _GENERIC_HEADING.match(h.strip()))


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def _first_sentence(text: str) -> tuple[str, str]:
    parts = _SENTENCE_END.split(text, maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else (text, "")


def split_by_note(
    pairs: list[TrainingPair], share: float, seed: int
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """(training, held out): the pairs of about ``share`` of the notes are held out."""
    notes = sorted(
        {p.note for p in pairs}, key=lambda note: hashlib.sha256(f"{seed}:{note}".encode()).digest()
    )
    held = set(notes[: max(1, round(len(notes) * share))])
    return [p for p in pairs if p.note not in held], [p for p in pairs if p.note in held]


def score_pairs(
    embed: Callable[[list[str]], np.ndarray], held_out: list[TrainingPair], all_pairs: list[TrainingPair]
) -> PairScore:
    """Rank each held-out query's passage among every passage of its kind in ``all_pairs`` (whole
    chunk texts for headings, the rests of passages for first sentences): no candidate holds the
    query's own words verbatim, so a first sentence does not find itself."""
    reciprocal, first = [], []
    for kind in ("heading", "sentence"):
        queries = [p for p in held_out if p.kind == kind]
        if not queries:
            continue
        passages = sorted({(p.chunk_id, p.passage) for p in all_pairs if p.kind == kind})
        position = {chunk_id: n for n, (chunk_id, _) in enumerate(passages)}
        similarity = embed([p.query for p in queries]) @ embed([text for _, text in passages]).T
        for row, pair in zip(similarity, queries, strict=True):
            rank = int((row > row[position[pair.chunk_id]]).sum())
            reciprocal.append(1.0 / (rank + 1) if rank < RANK_CUTOFF else 0.0)
            first.append(rank == 0)
    return PairScore(round(float(np.mean(reciprocal)), 4), round(float(np.mean(first)), 4))


def train(
    base: SentenceTransformerEmbedder,
    pairs: list[TrainingPair],
    settings: TuneSettings,
    progress: TrainingProgress | None = None,
) -> tuple[SentenceTransformerEmbedder, int]:
    """A copy of ``base`` trained on ``pairs`` with the in-batch-negatives loss, and the steps run;
    ``base`` is untouched."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(settings.seed)
    model = base.copy_model()
    seq_length = model.max_seq_length
    model.max_seq_length = min(seq_length or settings.max_seq_length, settings.max_seq_length)
    loss = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    batches = _batches(pairs, settings)
    # Linear decay to zero over the planned steps: the last steps change the weights least.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / max(1, len(batches)))
    deadline = time.monotonic() + settings.max_minutes * 60
    model.train()
    steps = 0
    for step, batch in enumerate(batches, start=1):
        if time.monotonic() > deadline:
            break
        steps = step
        features = [model.preprocess([p.query for p in batch]), model.preprocess([p.passage for p in batch])]
        value = loss(features, None)
        value.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if progress is not None:
            progress(step, len(batches), float(value.detach()))
    model.eval()
    model.max_seq_length = seq_length
    return base.with_model(model, tuned_embedder_name(base.name, model_weights(model))), steps


def _batches(pairs: list[TrainingPair], settings: TuneSettings) -> list[list[TrainingPair]]:
    rng = random.Random(settings.seed)
    batches: list[list[TrainingPair]] = []
    for _ in range(settings.epochs):
        order = list(pairs)
        rng.shuffle(order)
        for start in range(0, len(order), settings.batch_size):
            batch = _one_per_query(order[start : start + settings.batch_size])
            if len(batch) > 1:  # one pair has no in-batch negative to learn from
                batches.append(batch)
    return batches


def _one_per_query(batch: list[TrainingPair]) -> list[TrainingPair]:
    """Two pairs with the same query in a batch would each be the other's false negative."""
    by_query: dict[str, TrainingPair] = {}
    for pair in batch:
        by_query.setdefault(pair.query, pair)
    return list(by_query.values())


@dataclass(frozen=True)
class TuneReport:
    pairs: int
    held_out_pairs: int
    notes: int
    held_out_notes: int
    steps: int  # training steps run (fewer than planned when the time budget ran out)
    before: PairScore  # the embedder in use, on the held-out pairs
    after: PairScore  # the tuned one, on the same pairs
    adopted: bool  # the tuned embedder measured better and the memory now uses it
    embedder: str  # the embedder in use once the tune is over
    reencoded: int  # passages embedded again (0 when the old embedder was kept)
