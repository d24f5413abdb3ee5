"""Whether an answer fell into a loop: the model repeating itself instead of saying something new.

The text is read as words: lower-cased runs of letters and digits, every number written as ``#``,
punctuation and Markdown dropped (so table rules and list bullets are not words). An answer loops
when either

* a run of words is said at least ``MIN_COPIES`` times back to back (a "tandem" repeat) and the
  copies cover at least ``MIN_LOOP_WORDS`` words, with at least one word of letters in the
  run: "It is ... It is ... It is ...", or the same word fifty times; or
* one sentence (or line) of at least ``MIN_SENTENCE_WORDS`` words appears ``MIN_COPIES`` times or
  more anywhere in the answer, not necessarily in a row.

Numbers are one word (``#``), so "1. Use tr. 2. Use tr. 3. Use tr." is a loop, while a table of
figures or a numbered list whose items say different things is not: its rows repeat a shape,
not words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_COPIES = 3
MIN_LOOP_WORDS = 24  # shorter repeats ("very, very, very") are style, not a loop
MIN_SENTENCE_WORDS = 6
MAX_UNIT_WORDS = 200  # longest repeated run looked for

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_NUMBER = re.compile(r"\d+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Loop:
    """How an answer loops: ``kind`` is "tandem" or "sentence"; ``unit`` the repeated words."""

    kind: str
    unit: str
    copies: int


def words(text: str) -> list[str]:
    """The answer's words as the detector compares them (lower case, numbers as ``#``)."""
    return [_NUMBER.sub("#", w) for w in _WORD.findall(text.lower())]


def find_loop(text: str) -> Loop | None:
    """The first loop found in ``text`` (a tandem repeat first, then a repeated sentence), or None."""
    return _tandem_repeat(words(text)) or _repeated_sentence(text)


def is_looping(text: str) -> bool:
    return find_loop(text) is not None


def _tandem_repeat(ws: list[str]) -> Loop | None:
    """The shortest run of words repeated back to back often enough and long enough."""
    n = len(ws)
    for period in range(1, min(MAX_UNIT_WORDS, n // MIN_COPIES) + 1):
        run = 0  # consecutive positions i with ws[i] == ws[i + period]: copies = run // period + 1
        for i in range(n - period):
            run = run + 1 if ws[i] == ws[i + period] else 0
            copies = run // period + 1
            if run and copies >= MIN_COPIES and copies * period >= MIN_LOOP_WORDS:
                start = i - run + 1
                unit = ws[start : start + period]
                if any(w.isalpha() for w in unit):  # rows of numbers are a table, not a loop
                    while i + 1 < n - period and ws[i + 1] == ws[i + 1 + period]:
                        i, run = i + 1, run + 1
                    return Loop("tandem", " ".join(unit), run // period + 1)
    return None


def _repeated_sentence(text: str) -> Loop | None:
    """The most repeated sentence (or line) of enough words, if it is said often enough."""
    counts: dict[str, int] = {}
    for sentence in _SENTENCE_END.split(text):
        ws = words(sentence)
        if len(ws) >= MIN_SENTENCE_WORDS:
            key = " ".join(ws)
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return None
    key, copies = max(counts.items(), key=lambda item: item[1])
    return Loop("sentence", key, copies) if copies >= MIN_COPIES else None
