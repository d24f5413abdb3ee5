"""Structure-aware chunking: headings and paragraphs first, then bounded word windows with overlap."""

from __future__ import annotations

from dataclasses import dataclass

from rag.documents import Section

MAX_WORDS = 160  # with the heading line, stays inside MiniLM's 256-token window
OVERLAP_WORDS = 30


@dataclass(frozen=True)
class ChunkDraft:
    headings: tuple[str, ...]
    text: str


def chunk_sections(
    sections: list[Section], max_words: int = MAX_WORDS, overlap_words: int = OVERLAP_WORDS
) -> list[ChunkDraft]:
    chunks: list[ChunkDraft] = []
    for section in sections:
        for text in _pack_paragraphs(section.text, max_words, overlap_words):
            chunks.append(ChunkDraft(section.headings, text))
    return chunks


def _paragraphs(text: str) -> list[str]:
    blocks, current = [], []
    for line in text.split("\n"):
        if line.strip():
            current.append(line.rstrip())
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


def _word_windows(words: list[str], max_words: int, overlap_words: int) -> list[list[str]]:
    step = max(1, max_words - overlap_words)
    windows = []
    for start in range(0, len(words), step):
        windows.append(words[start : start + max_words])
        if start + max_words >= len(words):
            break
    return windows


def _pack_paragraphs(text: str, max_words: int, overlap_words: int) -> list[str]:
    """Greedily pack whole paragraphs; a paragraph too long alone is cut into overlapping windows.

    Consecutive chunks share the last ``overlap_words`` words, so a sentence on a boundary is
    whole in at least one of them.
    """
    chunks: list[str] = []
    current: list[str] = []  # paragraphs of the chunk being built
    current_words = 0
    for paragraph in _paragraphs(text):
        words = paragraph.split()
        if len(words) > max_words:
            if current:
                chunks.append("\n\n".join(current))
                current, current_words = [], 0
            chunks.extend(" ".join(window) for window in _word_windows(words, max_words, overlap_words))
            continue
        if current and current_words + len(words) > max_words:
            chunks.append("\n\n".join(current))
            tail = " ".join(chunks[-1].split()[-overlap_words:]) if overlap_words else ""
            current, current_words = ([tail], len(tail.split())) if tail else ([], 0)
            if current_words + len(words) > max_words:
                current, current_words = [], 0
        current.append(paragraph)
        current_words += len(words)
    if current:
        chunks.append("\n\n".join(current))
    return chunks
