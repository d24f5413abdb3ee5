"""Saved KV states of conversations, so one that comes back resumes warm.

A state is llama.cpp's per-sequence state (``llama_state_seq_get_data``) together with the exact
tokens it was computed from. It is only ever used for a prompt that starts with those tokens —
for the part they share — so one conversation's state never serves another's different history
(their common prefix, such as the system prompt, computes to the same values either way).

The cache is bounded in bytes and drops the least recently used state first. With a spill
folder, states also go to disk (atomically, bounded too): a dropped state is still found there,
and so is a state saved by an earlier process (``lantern ask -c``).
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np

from app.atomic import atomic_write_bytes
from app.prompt_lookup import TokenHistory

_MAGIC = b"LNTKV001"
_HEADER = struct.Struct("<8sQ")  # magic, token count; then int32 tokens, then the state bytes
MIN_TOKENS_WORTH_SAVING = 32


@dataclass
class SavedState:
    tokens: np.ndarray  # int32, exactly the tokens the state was computed from
    nbytes: int
    data: bytes | None = None  # in memory; None when only on disk
    path: Path | None = None

    def common_prefix(self, tokens: np.ndarray) -> int:
        n = min(len(self.tokens), len(tokens))
        if n == 0:
            return 0
        differs = np.flatnonzero(self.tokens[:n] != tokens[:n])
        return int(differs[0]) if differs.size else n


def context_fingerprint(model_path: Path, lora_path: Path | None, lora_scale: float, streams: int) -> str:
    """What a state depends on besides its tokens: the model file, the adapter, the KV layout
    (llama.cpp only restores a state into a context with as many KV streams) and the format."""
    parts = [f"llama_cpp {llama_cpp.__version__}", f"streams {streams}"]
    for path in (model_path, lora_path):
        if path is not None:
            st = Path(path).stat()
            parts.append(f"{Path(path).resolve()} {st.st_size} {st.st_mtime_ns}")
    parts.append(f"scale {lora_scale}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


class StateCache:
    def __init__(self, max_bytes: int, spill_dir: Path | None = None, max_disk_bytes: int = 0):
        self.max_bytes = max_bytes
        self.max_disk_bytes = max_disk_bytes if spill_dir is not None else 0
        self.spill_dir = spill_dir if self.max_disk_bytes > 0 else None
        self._memory: collections.OrderedDict[bytes, SavedState] = collections.OrderedDict()
        self._disk: collections.OrderedDict[bytes, SavedState] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        if self.spill_dir is not None:
            self._load_disk_index()

    # --- llama.cpp side ---------------------------------------------------------------------

    def save(self, ctx, seq_id: int, tokens: list[int] | np.ndarray) -> bool:
        """Copy sequence ``seq_id``'s state, computed from ``tokens``, into the cache."""
        tokens = np.asarray(tokens, dtype=np.int32)
        if len(tokens) < MIN_TOKENS_WORTH_SAVING or self.max_bytes <= 0 and self.spill_dir is None:
            return False
        key = _key(tokens)
        with self._lock:
            if key in self._memory or key in self._disk:
                self._touch(key)
                return True
        size = llama_cpp.llama_state_seq_get_size(ctx, seq_id)
        buffer = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(ctx, buffer, size, seq_id) != size:
            return False
        state = SavedState(tokens=tokens.copy(), nbytes=size, data=bytes(buffer))
        with self._lock:
            self._memory[key] = state
            self._evict_memory()
        return True

    def restore(self, ctx, state: SavedState, seq_id: int) -> bool:
        """Load ``state`` into the (empty) sequence ``seq_id``; False if llama.cpp refused it."""
        data = state.data
        if data is None:
            if state.path is None:
                return False  # dropped from the cache meanwhile
            try:
                data = state.path.read_bytes()[_HEADER.size + 4 * len(state.tokens) :]
            except OSError:
                return False
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        ok = llama_cpp.llama_state_seq_set_data(ctx, buffer, len(data), seq_id) == len(data)
        if ok:
            self.hits += 1
            with self._lock:
                self._touch(_key(state.tokens))  # used: the last to be dropped
        return ok

    # --- lookups ----------------------------------------------------------------------------

    def best_match(self, tokens: list[int]) -> tuple[SavedState | None, int]:
        """The saved state sharing the longest token prefix with ``tokens``, and that length."""
        query = np.asarray(tokens, dtype=np.int32)
        best, best_length = None, 0
        with self._lock:
            for state in [*self._memory.values(), *self._disk.values()]:
                length = state.common_prefix(query)
                if length > best_length:
                    best, best_length = state, length
        return best, best_length

    @property
    def memory_bytes(self) -> int:
        return sum(s.nbytes for s in self._memory.values())

    @property
    def disk_bytes(self) -> int:
        return sum(s.nbytes for s in self._disk.values())

    def __len__(self) -> int:
        return len(self._memory.keys() | self._disk.keys())

    def flush(self) -> None:
        """Write every state still only in memory to the spill folder (at shutdown)."""
        with self._lock:
            for key, state in list(self._memory.items()):
                if state.path is None and self.spill_dir is not None:
                    self._spill(key, state)

    # --- bookkeeping (under the lock) -------------------------------------------------------

    def _touch(self, key: bytes) -> None:
        for table in (self._memory, self._disk):
            if key in table:
                table.move_to_end(key)

    def _evict_memory(self) -> None:
        while self._memory and self.memory_bytes > self.max_bytes:
            key, state = self._memory.popitem(last=False)
            if state.path is None and self.spill_dir is not None:
                self._spill(key, state)
            state.data = None

    def _spill(self, key: bytes, state: SavedState) -> None:
        if state.nbytes > self.max_disk_bytes:
            return
        path = self.spill_dir / f"{key.hex()}.kv"
        header = _HEADER.pack(_MAGIC, len(state.tokens)) + state.tokens.astype("<i4").tobytes()
        try:
            self.spill_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write_bytes(path, header + state.data)
        except OSError:
            return  # a full disk costs warmth, never an answer
        state.path = path
        self._disk[key] = SavedState(tokens=state.tokens, nbytes=state.nbytes, path=path)
        while self._disk and self.disk_bytes > self.max_disk_bytes:
            _, dropped = self._disk.popitem(last=False)
            dropped.path.unlink(missing_ok=True)

    def _load_disk_index(self) -> None:
        if not self.spill_dir.is_dir():
            return
        files = sorted(self.spill_dir.glob("*.kv"), key=lambda p: p.stat().st_mtime_ns)
        for path in files:
            try:
                with open(path, "rb") as f:
                    magic, count = _HEADER.unpack(f.read(_HEADER.size))
                    if magic != _MAGIC:
                        raise ValueError
                    tokens = np.frombuffer(f.read(4 * count), dtype="<i4").astype(np.int32)
                nbytes = path.stat().st_size - _HEADER.size - 4 * count
                if len(tokens) != count or nbytes <= 0:
                    raise ValueError
            except (OSError, ValueError, struct.error):
                path.unlink(missing_ok=True)  # a damaged spill file is only lost warmth
                continue
            self._disk[_key(tokens)] = SavedState(tokens=tokens, nbytes=nbytes, path=path)
        while self._disk and self.disk_bytes > self.max_disk_bytes:
            _, dropped = self._disk.popitem(last=False)
            dropped.path.unlink(missing_ok=True)


def _key(tokens: np.ndarray) -> bytes:
    return hashlib.sha256(tokens.astype("<i4").tobytes()).digest()[:16]


def keep_shared_cells(
    ctx, seq_id: int, held: TokenHistory, tokens: list[int], cache: StateCache | None, reuse: bool
) -> tuple[TokenHistory, int]:
    """Prepare sequence ``seq_id`` (whose cells hold ``held``) for the prompt ``tokens``: keep the
    cells of their shared prefix, or restore a saved state sharing more, and drop the rest; what
    is about to be overwritten is saved first if worth it. Returns what the cells now hold and
    how many prompt tokens need no evaluation (never all: the last one gives the logits)."""
    memory = llama_cpp.llama_get_memory(ctx)
    shared = min(held.common_prefix(tokens), len(tokens) - 1) if reuse else 0
    if cache is not None and reuse:
        if len(held) - shared >= MIN_TOKENS_WORTH_SAVING:  # another conversation is in the cells
            cache.save(ctx, seq_id, held.view())
        saved, saved_shared = cache.best_match(tokens)
        saved_shared = min(saved_shared, len(tokens) - 1)
        if saved is not None and saved_shared > shared + MIN_TOKENS_WORTH_SAVING // 2:
            llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
            if cache.restore(ctx, saved, seq_id):
                held, shared = TokenHistory(saved.tokens.tolist()), saved_shared
            else:
                held, shared = TokenHistory(), 0
    if shared < min(MIN_TOKENS_WORTH_SAVING, len(tokens) - 1):
        shared = 0  # a few template tokens of another conversation: start afresh (a cold run exactly)
    if not llama_cpp.llama_memory_seq_rm(memory, seq_id, shared, -1):
        # Some caches (sliding-window, recurrent) cannot drop a tail: start afresh.
        llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
        shared = 0
    held.truncate(shared)
    return held, shared
