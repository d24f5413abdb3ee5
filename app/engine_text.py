"""Token ids to text while streaming: memoised token pieces and stop-sequence matching."""

from __future__ import annotations

import ctypes

import llama_cpp


class TokenPieces:
    """Token id -> the bytes it stands for, memoised (decoding is on the streaming hot path)."""

    def __init__(self, vocab):
        self._vocab = vocab
        self._buffer = ctypes.create_string_buffer(64)
        self._cache: dict[int, bytes] = {}

    def __getitem__(self, token: int) -> bytes:
        piece = self._cache.get(token)
        if piece is None:
            piece = self._cache[token] = self._decode(token)
        return piece

    def _decode(self, token: int) -> bytes:
        size = len(self._buffer)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._buffer, size, 0, False)
        if n < 0:  # the buffer was too small; -n is the size needed
            self._buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._buffer, -n, 0, False)
        return self._buffer.raw[:n]


class StopMatcher:
    """Finds stop sequences in streamed text, holding back what might be the start of one."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop sequence was hit)."""
        if not self.stops:
            return text, False
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
