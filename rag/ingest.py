"""Ingestion: scan the added roots, find new, changed and deleted notes by content hash, embed
only what changed, and commit in steps so an interrupted run keeps what it finished."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.chunking import chunk_sections
from rag.documents import UnreadableFile, is_supported, load_sections
from rag.embedder import Embedder
from rag.errors import MemoryStoreError
from rag.store import FileEntry, MemoryStore, contextual_text

EMBED_BATCH_CHUNKS = 1024  # passages sorted by length together, so batches pad little
PROGRESS_SLICE = 128  # passages embedded between two progress updates
# An interrupted ingest loses at most about this much embedding work ...
COMMIT_EVERY_S = float(os.environ.get("LANTERN_MEMORY_COMMIT_SECONDS", "20"))
# ... or this many times what the last commit took, whichever is longer: a commit rewrites the
# whole generation, so at a million passages it takes seconds, and committing every 20 s would
# spend most of the ingest writing. With this, commits take at most 1/(1+4) of the time.
WORK_PER_COMMIT_COST = 4.0

Progress = Callable[[int, int], None]  # (passages embedded, passages to embed)


@dataclass
class SyncReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    empty: int = 0
    chunks_added: int = 0
    skipped_unsupported: int = 0
    skipped_unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # Roots or folders that could not be listed: their notes are kept, not taken for deleted.
    unavailable: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{self.added} added",
            f"{self.updated} updated",
            f"{self.removed} removed",
            f"{self.unchanged} unchanged",
            f"{self.chunks_added} chunks embedded",
        ]
        if self.empty:
            parts.append(f"{self.empty} empty")
        if self.skipped_unsupported:
            parts.append(f"{self.skipped_unsupported} skipped (unsupported type)")
        if self.skipped_unreadable:
            parts.append(f"{len(self.skipped_unreadable)} skipped (unreadable)")
        if self.unavailable:
            parts.append(f"{len(self.unavailable)} unavailable, notes kept: {', '.join(self.unavailable)}")
        return ", ".join(parts)


@dataclass(frozen=True)
class _Found:
    path: str
    root: str
    relative: str
    size: int
    mtime_ns: int


@dataclass
class _Pending:
    found: _Found
    sha256: str
    chunks: list[tuple[tuple[str, ...], str]]
    existed: bool


def is_virtual_root(root: str) -> bool:
    """Roots like 'lantern:conversations' hold notes Lantern made; there is no folder to scan."""
    return root.startswith("lantern:")


def resolve_root(path: Path) -> str:
    try:
        resolved = path.expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # e.g. ~nosuchuser
        raise MemoryStoreError(f"cannot use the path {path}: {exc}") from None
    if not resolved.exists():
        raise MemoryStoreError(f"{path} does not exist")
    return str(resolved)


def _scan(roots: list[str], forgotten: list[str], report: SyncReport) -> dict[str, _Found]:
    found: dict[str, _Found] = {}

    def visit(path: Path, root: str, relative: str) -> None:
        text_path = str(path)
        if any(text_path == f or text_path.startswith(f + os.sep) for f in forgotten):
            return
        if not is_supported(path):
            report.skipped_unsupported += 1
            return
        try:
            stat = path.stat()
        except OSError as exc:
            report.skipped_unreadable.append((text_path, exc.strerror or str(exc)))
            return
        found[text_path] = _Found(text_path, root, relative, stat.st_size, stat.st_mtime_ns)

    for root in roots:
        root_path = Path(root)
        if root_path.is_file():
            visit(root_path, root, root_path.name)
            continue
        if not root_path.is_dir():  # unmounted, renamed or deleted: not proof its notes are gone
            report.unavailable.append(root)
            continue
        unlisted = lambda error: report.unavailable.append(error.filename)  # noqa: E731
        for directory, subdirs, names in os.walk(root_path, onerror=unlisted):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                path = Path(directory) / name
                if is_supported(path) and path.is_symlink() and not path.exists():
                    report.skipped_unreadable.append((str(path), "broken symbolic link"))
                elif path.is_file():
                    visit(path, root, str(path.relative_to(root_path)))
    return found


class Ingester:
    def __init__(self, store: MemoryStore, embedder: Embedder, progress: Progress | None = None):
        self.store = store
        self.embedder = embedder
        self.progress = progress or (lambda done, total: None)
        self._done = self._total = 0

    def add(self, paths: list[Path]) -> SyncReport:
        """Add roots (files or folders) and index them; roots are committed before any embedding."""
        roots = [resolve_root(p) for p in paths]
        self.store.bind_embedder(self.embedder.name, self.embedder.dimension)
        for root in roots:
            self.store.add_root(root)
        self.store.commit()
        return self.sync()

    def sync(self) -> SyncReport:
        store, report = self.store, SyncReport()
        if store.roots:
            store.bind_embedder(self.embedder.name, self.embedder.dimension)
        found = _scan([r for r in store.roots if not is_virtual_root(r)], store.forgotten, report)
        gone = [
            p
            for p, entry in store.files.items()
            if p not in found
            and not is_virtual_root(entry.root)
            and not any(p == u or p.startswith(u.rstrip(os.sep) + os.sep) for u in report.unavailable)
        ]
        for path in gone:
            store.remove_file(path)
            report.removed += 1
        to_check = [f for f in found.values() if _stat_changed(store.files.get(f.path), f)]
        report.unchanged += len(found) - len(to_check)
        # Reading and chunking is quick next to embedding; doing it first gives an honest total.
        prepared = [ready for item in to_check if (ready := self._prepare(item, report)) is not None]
        self._total = sum(len(p.chunks) for p in prepared)
        self._done = 0
        self.progress(0, self._total)
        pending: list[_Pending] = []
        checkpoints = _Checkpoints(store)
        for ready in prepared:
            pending.append(ready)
            if sum(len(p.chunks) for p in pending) >= EMBED_BATCH_CHUNKS:
                self._embed_and_store(pending, report)
                pending = []
                checkpoints.commit_when_due()
        self._embed_and_store(pending, report)
        store.finish_background_work()
        store.commit()
        return report

    def add_text(self, key: str, root: str, relative: str, text: str) -> int:
        """Store a note that has no file of its own (a saved conversation); returns its chunk count."""
        if not is_virtual_root(root):
            raise ValueError("text notes need a virtual root")
        self.store.bind_embedder(self.embedder.name, self.embedder.dimension)
        self.store.add_root(root)
        data = text.encode("utf-8")
        found = _Found(key, root, relative, len(data), 0)
        chunks = [(c.headings, c.text) for c in chunk_sections(load_sections(Path(relative), data))]
        pending = _Pending(found, hashlib.sha256(data).hexdigest(), chunks, key in self.store.files)
        self._embed_and_store([pending], SyncReport())
        self.store.commit()
        return len(chunks)

    def reencode(self, weights: bytes | None = None) -> int:
        """Embed every chunk again with this ingester's embedder (a tune, with its ``weights``, or
        the stock one of a rollback) and commit; readers keep the old vectors and embedder until
        the commit. Returns the count."""
        chunks = self.store.chunks()
        texts = [contextual_text(self.store.files[c.path].relative, c.headings, c.text) for c in chunks]
        self._total, self._done = len(texts), 0
        self.progress(0, self._total)
        vectors = self._embed_with_progress(texts)
        ids = np.asarray([c.id for c in chunks], dtype=np.int64)
        self.store.use_embedder(self.embedder.name, self.embedder.dimension, ids, vectors, weights)
        self.store.commit()
        return len(chunks)

    def _prepare(self, found: _Found, report: SyncReport) -> _Pending | None:
        try:
            data = Path(found.path).read_bytes()
        except OSError as exc:
            report.skipped_unreadable.append((found.path, exc.strerror or str(exc)))
            return None
        sha256 = hashlib.sha256(data).hexdigest()
        known = self.store.files.get(found.path)
        if known is not None and known.sha256 == sha256 and known.root == found.root:
            self.store.touch_file(found.path, found.size, found.mtime_ns)
            report.unchanged += 1
            return None
        try:
            sections = load_sections(Path(found.path), data) if data else []
        except UnreadableFile as exc:
            report.skipped_unreadable.append((found.path, str(exc)))
            return None
        chunks = [(c.headings, c.text) for c in chunk_sections(sections)]
        if not chunks:
            report.empty += 1
        return _Pending(found, sha256, chunks, existed=known is not None)

    def _embed_with_progress(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.embedder.dimension), dtype=np.float32)
        for indices in _length_sorted_slices(texts, PROGRESS_SLICE):
            vectors[indices] = self.embedder.embed([texts[i] for i in indices])
            self._done += len(indices)
            self.progress(self._done, self._total)
        return vectors

    def _embed_and_store(self, pending: list[_Pending], report: SyncReport) -> None:
        texts = [contextual_text(p.found.relative, h, t) for p in pending for h, t in p.chunks]
        vectors = self._embed_with_progress(texts)
        start = 0
        for item in pending:
            f = item.found
            entry = FileEntry(f.root, f.relative, item.sha256, f.size, f.mtime_ns)
            count = len(item.chunks)
            self.store.put_file(f.path, entry, item.chunks, vectors[start : start + count])
            start += count
            report.chunks_added += count
            if item.existed:
                report.updated += 1
            else:
                report.added += 1


class _Checkpoints:
    """Commits during a long ingest, so a killed run keeps what it embedded; the next sync skips
    files already stored (same size, time and hash) and goes on from there."""

    def __init__(self, store: MemoryStore):
        self.store = store
        self.last = time.monotonic()
        self.cost = 0.0  # seconds the last commit took

    def commit_when_due(self) -> None:
        if time.monotonic() - self.last <= max(COMMIT_EVERY_S, WORK_PER_COMMIT_COST * self.cost):
            return
        started = time.monotonic()
        self.store.commit(map_index=False)
        self.last = time.monotonic()
        self.cost = self.last - started


def _length_sorted_slices(texts: list[str], size: int) -> list[np.ndarray]:
    """Indices of ``texts``, longest first, in slices: each slice pads little, as in one big call."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [order[i : i + size] for i in range(0, len(order), size)]


def _stat_changed(entry: FileEntry | None, found: _Found) -> bool:
    return (
        entry is None
        or entry.size != found.size
        or entry.mtime_ns != found.mtime_ns
        or (entry.root != found.root)
    )
