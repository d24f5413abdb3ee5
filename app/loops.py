"""Whether an answer fell into a loop: the model repeating itself instead of saying something new.

The text is read as words: lower-cased runs of letters and digits, every number written as ``#``,
punctuation and Markdown dropped (so table rules and list bullets are not words). An answer loops
when either

* a run of words is said at least ``MIN_COPIES`` times back to back (a "tandem" repeat) and the
  copies cover at least ``MIN_LOOP_WORDS`` words, with at least one word of letters in the
  run: "It is ... It is ... It is ...", or the same word fifty times; or
* one sentence (or line) of at least ``MIN_SENTENCE_WORDS`` words appears ``MIN_COPIES`` times or
  more anywhere in the answer, not necessarily in a row; or
* one line, whatever it holds, is written ``MIN_LINE_COPIES`` times in a row, blank lines aside
  (the model printing an empty code fence until the token limit has no words to repeat); or
* the answer ran into the token limit while circling: of the word triples in its last
  ``RAMBLE_WINDOW`` words, at least ``RAMBLE_SHARE`` repeat a triple said earlier in the answer.
  A repetition guard turns word-for-word loops into loops that vary a word each time ("The with
  statement is part of X, and it is part of X." over and over); those never end, so only answers
  cut by the limit are judged this way (finished answers that repeat themselves a lot are verbose,
  not stuck); or
* the answer ran into the token limit in a list that fills one template: its last
  ``TEMPLATE_LINES`` lines or more all begin with the same two words ("- 1 day of X (e.g. X
  rooms)", "#define MAX_X 1").

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
MIN_LINE_COPIES = 8
RAMBLE_WINDOW = 150
# In the tuning set's answers (bench/data/repetition_tuning.jsonl), those stuck circling at the
# limit repeated 50-58% of their triples, the one list that was merely long 19%.
RAMBLE_SHARE = 0.4
TEMPLATE_LINES = 10

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_NUMBER = re.compile(r"\d+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Loop:
    """How an answer loops: ``kind`` is "tandem" or "sentence"; ``unit`` the repeated words."""

    kind: str  # "tandem", "sentence", "line", "ramble" or "template"
    unit: str
    copies: int


def words(text: str) -> list[str]:
    """The answer's words as the detector compares them (lower case, numbers as ``#``)."""
    return [_NUMBER.sub("#", w) for w in _WORD.findall(text.lower())]


def find_loop(text: str, hit_limit: bool = False) -> Loop | None:
    """The first loop found in ``text``, or None. ``hit_limit``: the answer was cut by the token
    limit (it did not end by itself), which is when circling counts as a loop."""
    ws = words(text)
    loop = _tandem_repeat(ws) or _repeated_sentence(text) or _repeated_line(text)
    if loop is None and hit_limit:
        loop = _ramble(ws) or _template(text)
    return loop


def _repeated_line(text: str) -> Loop | None:
    """The longest run of one line written again and again (blank lines aside), if long enough."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    best, run = None, 0
    for k, line in enumerate(lines):
        run = run + 1 if k and line == lines[k - 1] else 1
        if run >= MIN_LINE_COPIES and (best is None or run > best.copies):
            best = Loop("line", line, run)
    return best


def _ramble(ws: list[str]) -> Loop | None:
    """A cut-off answer whose last words mostly say again what it said before."""
    if len(ws) < RAMBLE_WINDOW:
        return None
    seen: set[tuple[str, ...]] = set()
    repeated = []
    for i in range(len(ws) - 2):
        triple = (ws[i], ws[i + 1], ws[i + 2])
        repeated.append(triple in seen and any(w.isalpha() for w in triple))
        seen.add(triple)
    tail = repeated[-RAMBLE_WINDOW:]
    share = sum(tail) / len(tail)
    if share < RAMBLE_SHARE:
        return None
    return Loop("ramble", f"{share:.0%} of the word triples of the last {RAMBLE_WINDOW} words", 1)


def _template(text: str) -> Loop | None:
    """A cut-off answer whose last lines all begin with the same two words."""
    starts = [words(line)[:2] for line in text.splitlines() if line.strip()]
    last = starts[-1] if starts else []
    run = 0
    for start in reversed(starts):
        if start != last:
            break
        run += 1
    if len(last) < 2 or run < TEMPLATE_LINES:
        return None
    return Loop("template", " ".join(last), run)


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
