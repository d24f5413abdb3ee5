"""Draft tokens for speculative decoding from the conversation itself (prompt lookup).

An answer built from notes repeats their words: when the last few tokens of the sequence so far
appeared earlier in it, the tokens that followed them then are a good guess for what comes next.
The guess costs no model; llama.cpp checks it in the same batch as the next token.
"""

from __future__ import annotations

import numpy as np

LONGEST_NGRAM = 3
SHORTEST_NGRAM = 2
MAX_DRAFT = 6


def draft_from_history(history: np.ndarray, max_draft: int = MAX_DRAFT) -> list[int]:
    """Tokens that followed the latest earlier occurrence of ``history``'s last n-gram (longest
    n first, from ``LONGEST_NGRAM`` down to ``SHORTEST_NGRAM``); empty when nothing matches."""
    length = len(history)
    for n in range(LONGEST_NGRAM, SHORTEST_NGRAM - 1, -1):
        if length <= n or max_draft <= 0:
            continue
        tail = history[length - n :]
        # Windows starting at 0 .. length - n - 1 (the tail itself excluded) that equal the tail.
        matches = np.ones(length - n, dtype=bool)
        for k in range(n):
            matches &= history[k : length - n + k] == tail[k]
        starts = np.flatnonzero(matches)
        if starts.size:
            follow = int(starts[-1]) + n
            draft = history[follow : follow + max_draft]
            if draft.size:
                return [int(t) for t in draft]
    return []


class TokenHistory:
    """The tokens of one sequence in a growing numpy buffer (drafting scans it every step)."""

    def __init__(self, tokens: list[int] | None = None):
        self._buffer = np.zeros(max(256, 2 * len(tokens or [])), dtype=np.int32)
        self.length = 0
        if tokens:
            self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        needed = self.length + len(tokens)
        if needed > len(self._buffer):
            grown = np.zeros(max(needed, 2 * len(self._buffer)), dtype=np.int32)
            grown[: self.length] = self._buffer[: self.length]
            self._buffer = grown
        self._buffer[self.length : needed] = tokens
        self.length = needed

    def append(self, token: int) -> None:
        self.extend([token])

    def truncate(self, length: int) -> None:
        self.length = min(self.length, length)

    def tokens(self) -> list[int]:
        return self._buffer[: self.length].tolist()

    def view(self) -> np.ndarray:
        return self._buffer[: self.length]

    def __len__(self) -> int:
        return self.length

    def common_prefix(self, tokens: list[int]) -> int:
        n = min(self.length, len(tokens))
        if n == 0:
            return 0
        differs = np.flatnonzero(self._buffer[:n] != np.asarray(tokens[:n], dtype=np.int32))
        return int(differs[0]) if differs.size else n

    def draft(self, max_draft: int = MAX_DRAFT) -> list[int]:
        return draft_from_history(self.view(), max_draft)
