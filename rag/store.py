"""The memory store: chunk texts, vectors and the BM25 index under one consistency record.

On disk (``<data home>/memory``)::

    keyring.json          only when encrypted: a check of the data home's key (or, for memories
                          encrypted before the whole home was, scrypt parameters), no secrets
    manifest.lmem         the consistency record: generation, roots, files, chunk ids, index choice
    chunks-<gen>.lmem     chunk texts and headings of that generation
    index-<gen>.lmem      FAISS index, BM25 matrix and row order of that generation
    dense-<gen>.faiss     only in a plain memory with an IVF-PQ index: that FAISS index, as a file
                          of its own that readers memory-map instead of reading it into RAM
    embedder-<gen>.lmem   only with a tuned embedder: its weights (safetensors), written with the
                          generation that adopted them, or re-sealed them on encryption

A commit writes the generation's data files first, then atomically replaces the manifest that
names them, then deletes older generations and any tuned weights it no longer names. Killed at
any point, the store opens as the last committed generation. Writers hold ``write.lock`` for a
whole operation, one at a time; commits and loads also take ``commit.lock`` so a reader never
sees a generation half deleted.

The manifest records the size and sha256 of ``dense-<gen>.faiss``. Every open checks the size
(cheap, and FAISS's mapped reader can crash on a truncated file); hashing the whole file at every
open would read all of it, which the memory map is there to avoid, so the sha256 is checked when
the file is written and by writers (``writing()``) before they build a new generation from it:
a damaged index is refused rather than carried forward. An encrypted memory keeps its index
inside the sealed index file: nothing derived from the notes lies on disk in plain form.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from app.atomic import atomic_write_bytes
from rag.crypto import Cipher, DataKeyCheck, Keyring, read_keyring
from rag.dense import IVFPQ_ABOVE, DenseIndex, read_mapped_index, write_index_file
from rag.errors import MemoryStoreError, TamperedFileError
from rag.lexical import BM25Index
from rag.sealed_file import read_sealed, write_sealed

if TYPE_CHECKING:
    import faiss

FORMAT = "lantern-memory-1"


class KeySource(Protocol):
    """Where an encrypted memory's key comes from (app/home_key.HomeKey)."""

    def secret(self) -> bytes:
        """The passphrase or key file's bytes (memories with a keyring of their own)."""

    def data_cipher(self) -> Cipher:
        """The data home's key (memories sealed with it)."""

    def forget(self) -> None:
        """Drop a secret that did not unlock, so the next try asks again."""


@dataclass(frozen=True)
class Chunk:
    id: int
    path: str  # absolute path of the note file
    headings: tuple[str, ...]
    text: str


@dataclass
class FileEntry:
    root: str
    relative: str  # shown to the user as the source
    sha256: str
    size: int
    mtime_ns: int
    chunk_ids: list[int] = field(default_factory=list)


def contextual_text(relative: str, headings: tuple[str, ...], text: str) -> str:
    """What gets embedded and BM25-indexed: the chunk under its file and heading path."""
    stem = Path(relative).stem.replace("-", " ").replace("_", " ")
    return " › ".join((stem, *headings)) + "\n" + text


@contextlib.contextmanager
def _flock(path: Path, exclusive: bool) -> Iterator[None]:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


class MemoryStore:
    def __init__(self, directory: Path, cipher: Cipher | None, ivfpq_above: int = IVFPQ_ABOVE):
        self.directory = directory
        self.cipher = cipher
        self.ivfpq_above = ivfpq_above  # passages above which the dense index is IVF-PQ
        self.generation = 0
        self.embedder_name = ""
        self.dimension = 0
        self.embedder_weights = ""  # the file of a tuned embedder's weights; "" when not tuned
        self._pending_weights: bytes | None = None  # written by the next commit
        self.roots: list[str] = []
        self.forgotten: list[str] = []
        self.roots_forgotten = 0
        self.files: dict[str, FileEntry] = {}
        self.next_chunk_id = 0
        self.index_description: dict = {"kind": "exact"}
        self.dense_file: dict | None = None  # name, size, sha256 of dense-<gen>.faiss, if there is one
        self._loaded = False
        self._chunks: dict[int, Chunk] = {}
        self._dense: DenseIndex | None = None
        self._lexical = BM25Index()
        self._lexical_rows = np.zeros(0, dtype=np.int64)
        self._pending_rows: list[np.ndarray] = []

    # --- opening -------------------------------------------------------------------------------

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / "manifest.lmem").exists()

    @staticmethod
    def is_encrypted(directory: Path) -> bool:
        return (directory / "keyring.json").exists()

    @classmethod
    def open(
        cls, directory: Path, keys: KeySource | None = None, ivfpq_above: int = IVFPQ_ABOVE
    ) -> MemoryStore:
        """Open the store in ``directory``; an empty plain store if there is none yet.
        ``ivfpq_above``: memory.ivfpq_above, the size where the dense index becomes IVF-PQ."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        cls._settle_pending_keyring(directory)
        cipher = None
        keyring_path = directory / "keyring.json"
        if keyring_path.exists():
            keyring = read_keyring(keyring_path.read_bytes(), str(keyring_path))
            if keys is None:
                raise MemoryStoreError(
                    "the memory is encrypted; set LANTERN_PASSPHRASE (or LANTERN_KEY_FILE) "
                    "or run in a terminal to be asked"
                )
            if isinstance(keyring, DataKeyCheck):
                cipher = keyring.unlock(keys.data_cipher())
            else:
                cipher = keyring.unlock(keys.secret())
        store = cls(directory, cipher, ivfpq_above)
        if cls.exists(directory):
            with _flock(directory / "commit.lock", exclusive=False):
                store._read_manifest()
        return store

    @staticmethod
    def _settle_pending_keyring(directory: Path) -> None:
        """An encryption stopped half way: keep it if its sealed manifest was committed, else undo it."""
        pending = directory / "keyring.json.pending"
        if not pending.exists() or (directory / "keyring.json").exists():
            return
        manifest = directory / "manifest.lmem"
        sealed = manifest.exists() and manifest.read_bytes()[8:9] == b"E"
        if sealed:
            os.replace(pending, directory / "keyring.json")
        else:
            pending.unlink()

    @classmethod
    def seal(cls, directory: Path, cipher: Cipher) -> MemoryStore:
        """Seal the memory in ``directory`` with the data home's ``cipher``: a plain memory is
        re-written sealed (an empty one started sealed); one already sealed under the same key
        (a memory encrypted before the whole home, whose key became the data key) gets the new
        keyring only. Killed at any point, the memory opens as it was or as sealed."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        keyring_path = directory / "keyring.json"
        with _flock(directory / "write.lock", exclusive=True):
            cls._settle_pending_keyring(directory)  # a sealing killed half way: kept or undone
            if keyring_path.exists():
                keyring = read_keyring(keyring_path.read_bytes(), str(keyring_path))
                if isinstance(keyring, DataKeyCheck):
                    keyring.unlock(cipher)
                store = cls(directory, cipher)
                if cls.exists(directory):
                    store._read_manifest()  # proves the key before the keyring changes
                if isinstance(keyring, Keyring):
                    atomic_write_bytes(keyring_path, DataKeyCheck.create(cipher).to_bytes())
                return store
            store = cls.open(directory)
            store._ensure_loaded()
            if store.embedder_weights:  # sealed anew under the new key, as a file of the new generation
                store._pending_weights = store.read_embedder_weights()
            store.cipher = cipher
            # The keyring waits beside the store until the sealed generation is committed; open()
            # finishes or undoes an encryption that was interrupted (see _settle_pending_keyring).
            pending = directory / "keyring.json.pending"
            atomic_write_bytes(pending, DataKeyCheck.create(cipher).to_bytes())
            store.commit()
            os.replace(pending, keyring_path)
        return store

    @contextlib.contextmanager
    def writing(self) -> Iterator[MemoryStore]:
        """Hold the writer lock for one whole operation (add, sync, forget) on a fresh view."""
        with _flock(self.directory / "write.lock", exclusive=True):
            # Another writer may have committed since this view was read: start from the newest.
            self._loaded = False
            self._ensure_loaded(verify_dense_file=True)
            yield self

    def _path(self, name: str) -> Path:
        return self.directory / name

    def _read_manifest(self) -> None:
        raw = read_sealed(self._path("manifest.lmem"), self.cipher)
        try:
            manifest = json.loads(raw)
            if manifest.get("format") != FORMAT:
                raise MemoryStoreError(f"{self._path('manifest.lmem')} has an unknown format")
            self.generation = int(manifest["generation"])
            self.embedder_name = manifest["embedder"]["name"]
            self.dimension = int(manifest["embedder"]["dimension"])
            self.embedder_weights = manifest["embedder"].get("weights", "")
            self.roots = list(manifest["roots"])
            self.forgotten = list(manifest.get("forgotten", []))
            self.files = {path: FileEntry(**entry) for path, entry in manifest["files"].items()}
            self.next_chunk_id = int(manifest["next_chunk_id"])
            self.index_description = dict(manifest["index"])
            self.dense_file = _dense_file_record(manifest.get("dense_file"), self.generation)
        except (ValueError, KeyError, TypeError) as exc:
            raise TamperedFileError(
                f"{self._path('manifest.lmem')} is not a valid manifest ({exc})"
            ) from None

    def _ensure_loaded(self, verify_dense_file: bool = False) -> None:
        if self._loaded:
            return
        if not self.exists(self.directory):
            self._loaded = True
            return
        with _flock(self.directory / "commit.lock", exclusive=False):
            # Metadata and data files are read under one lock so they are of the same commit.
            # Loading happens before any change (every mutator loads first), so nothing is lost.
            self._read_manifest()
            if self.generation == 0:
                self._loaded = True
                return
            chunks_raw = read_sealed(self._path(f"chunks-{self.generation}.lmem"), self.cipher)
            index_raw = read_sealed(self._path(f"index-{self.generation}.lmem"), self.cipher)
            mapped_index = self._map_dense_file(verify_dense_file) if self.dense_file else None
        index_name = self._path(f"index-{self.generation}.lmem")
        try:
            chunks = {
                cid: Chunk(cid, path, tuple(headings), text)
                for cid, path, headings, text in json.loads(chunks_raw)["chunks"]
            }
            with np.load(io.BytesIO(index_raw), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            dense = DenseIndex.from_arrays(
                arrays, self.dimension, self.index_description, self.ivfpq_above, mapped_index
            )
            lexical = BM25Index.from_arrays(arrays)
            rows = arrays["lexical_rows"]
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise TamperedFileError(f"{index_name} or its chunks file is not valid ({exc})") from None
        live = {cid for entry in self.files.values() for cid in entry.chunk_ids}
        if set(chunks) != live or len(rows) != len(live) or len(dense) != len(live):
            raise TamperedFileError(
                f"the memory in {self.directory} is inconsistent (generation {self.generation}); "
                "move it aside and re-add your notes"
            )
        self._chunks, self._dense, self._lexical, self._lexical_rows = chunks, dense, lexical, rows
        self._pending_rows = []
        self._loaded = True

    def _map_dense_file(self, verify_digest: bool) -> faiss.Index:
        """The generation's FAISS file, memory-mapped once its size (and, if asked, its sha256)
        matches what the manifest recorded."""
        path = self._path(self.dense_file["name"])
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise TamperedFileError(f"{path} is missing; restore it from a backup") from None
        damaged = TamperedFileError(f"{path} is damaged or was altered; Lantern did not open it")
        if size != self.dense_file["size"]:
            raise damaged
        if verify_digest and _file_sha256(path) != self.dense_file["sha256"]:
            raise damaged
        try:
            return read_mapped_index(path)
        except RuntimeError:
            raise damaged from None

    def load(self) -> MemoryStore:
        """Read the committed generation now (it is otherwise read on first use)."""
        self._ensure_loaded()
        return self

    # --- reading -------------------------------------------------------------------------------

    @property
    def chunk_count(self) -> int:
        return sum(len(entry.chunk_ids) for entry in self.files.values())

    def chunk(self, chunk_id: int) -> Chunk:
        self._ensure_loaded()
        return self._chunks[chunk_id]

    @property
    def dense(self) -> DenseIndex:
        self._ensure_loaded()
        if self._dense is None:
            self._dense = DenseIndex(self.dimension or 1, ivfpq_above=self.ivfpq_above)
        return self._dense

    @property
    def lexical(self) -> BM25Index:
        self._ensure_loaded()
        return self._lexical

    @property
    def lexical_rows(self) -> np.ndarray:
        """The chunk id of each BM25 row, ascending (ids only grow; removals keep the order)."""
        self._ensure_loaded()
        if self._pending_rows:
            self._lexical_rows = np.concatenate([self._lexical_rows, *self._pending_rows])
            self._pending_rows = []
        return self._lexical_rows

    def chunks(self) -> list[Chunk]:
        """Every chunk, file by file."""
        self._ensure_loaded()
        return [self._chunks[cid] for entry in self.files.values() for cid in entry.chunk_ids]

    def read_embedder_weights(self) -> bytes:
        """The verified weights of the tuned embedder this generation's vectors come from."""
        if not self.embedder_weights:
            raise MemoryStoreError(f"the memory's embedder {self.embedder_name} has no tuned weights")
        return read_sealed(self._path(self.embedder_weights), self.cipher)

    def data_files(self) -> list[Path]:
        names = ["manifest.lmem"]
        if self.generation:
            names += [f"chunks-{self.generation}.lmem", f"index-{self.generation}.lmem"]
        if self.dense_file:
            names.append(self.dense_file["name"])
        if self.cipher is not None:
            names.append("keyring.json")
        if self.embedder_weights:
            names.append(self.embedder_weights)
        return [self._path(n) for n in names if self._path(n).exists()]

    # --- changing ------------------------------------------------------------------------------

    def bind_embedder(self, name: str, dimension: int) -> None:
        """Record the embedder on first use; refuse to mix vectors from another one."""
        self._ensure_loaded()
        if not self.embedder_name and not self.files:
            self.embedder_name, self.dimension = name, dimension
            self._dense = DenseIndex(dimension, ivfpq_above=self.ivfpq_above)
            return
        if (name, dimension) != (self.embedder_name, self.dimension):
            raise MemoryStoreError(
                f"the memory was built with the embedder {self.embedder_name} ({self.dimension} dims), "
                f"not {name} ({dimension} dims); switch back, or start a new memory to re-embed"
            )

    def use_embedder(
        self, name: str, dimension: int, ids: np.ndarray, vectors: np.ndarray, weights: bytes | None
    ) -> None:
        """Every chunk's vector from another embedder (a tune, or its rollback), with the tuned
        weights it needs (None for a stock one); readers see the change once it is committed."""
        self._ensure_loaded()
        if sorted(ids.tolist()) != sorted(self._chunks):
            raise ValueError("use_embedder needs a vector for every chunk")
        dense = DenseIndex(dimension, ivfpq_above=self.ivfpq_above)
        dense.add(ids, vectors)
        dense.finish_build()  # every vector arrives at once: nothing to run beside the build
        self._dense, self.embedder_name, self.dimension = dense, name, dimension
        self._pending_weights = weights
        if weights is None:
            self.embedder_weights = ""

    def add_root(self, root: str) -> None:
        self._ensure_loaded()
        if not any(_is_within(root, existing) for existing in self.roots):
            # A folder that contains earlier roots takes their place: each file has one root.
            self.roots = [r for r in self.roots if not _is_within(r, root)] + [root]
        self.forgotten = [p for p in self.forgotten if not _is_within(p, root) and not _is_within(root, p)]

    def put_file(
        self, path: str, entry: FileEntry, chunks: list[tuple[tuple[str, ...], str]], vectors: np.ndarray
    ) -> None:
        """Replace whatever the store had for ``path`` with these chunks and their vectors."""
        self._ensure_loaded()
        self.remove_file(path)
        ids = np.arange(self.next_chunk_id, self.next_chunk_id + len(chunks), dtype=np.int64)
        self.next_chunk_id += len(chunks)
        entry.chunk_ids = [int(i) for i in ids]
        for cid, (headings, text) in zip(entry.chunk_ids, chunks, strict=True):
            self._chunks[cid] = Chunk(cid, path, headings, text)
        self.dense.add(ids, vectors)
        self._lexical.add([contextual_text(entry.relative, h, t) for h, t in chunks])
        self._pending_rows.append(ids)
        self.files[path] = entry

    def remove_file(self, path: str) -> None:
        self._ensure_loaded()
        entry = self.files.pop(path, None)
        if entry is None or not entry.chunk_ids:
            return
        for cid in entry.chunk_ids:
            self._chunks.pop(cid, None)
        self.dense.remove(entry.chunk_ids)
        keep = ~np.isin(self.lexical_rows, entry.chunk_ids)
        self._lexical.keep_rows(keep)
        self._lexical_rows = self._lexical_rows[keep]

    def forget(self, target: str) -> list[str]:
        """Remove every file at or under ``target``; sync will not bring them back."""
        self._ensure_loaded()
        removed = [p for p in self.files if _is_within(p, target)]
        for path in removed:
            self.remove_file(path)
        before = len(self.roots)
        self.roots = [r for r in self.roots if not _is_within(r, target)]
        self.roots_forgotten = before - len(self.roots)
        if any(_is_within(target, r) for r in self.roots) and target not in self.forgotten:
            self.forgotten.append(target)
        return removed

    def touch_file(self, path: str, size: int, mtime_ns: int) -> None:
        self._ensure_loaded()
        entry = self.files[path]
        entry.size, entry.mtime_ns = size, mtime_ns

    def finish_background_work(self) -> None:
        """Wait for a dense index build running in the background (minutes for millions of
        passages) and swap it in, so that the next commit writes the trained index."""
        if self._dense is not None:
            self._dense.finish_build()

    def commit(self, map_index: bool = True) -> None:
        """Write a new generation and make it the current one, atomically. ``map_index``: search
        the written IVF-PQ file memory-mapped from now on; an ingest's checkpoints say no, since
        its next addition would copy the whole index back into RAM."""
        self._ensure_loaded()
        generation = self.generation + 1
        chunks_json = json.dumps(
            {"chunks": [[c.id, c.path, list(c.headings), c.text] for c in self._chunks.values()]},
            ensure_ascii=False,
        ).encode("utf-8")
        self.dense.install_finished_build()  # so the kind below is the one written
        # Memory-mapped by readers; an encrypted memory seals it in the index file instead.
        index_in_own_file = self.cipher is None and self.dense.kind == "ivfpq"
        arrays = {
            **self.dense.to_arrays(with_index=not index_in_own_file),
            **self._lexical.to_arrays(),
            "lexical_rows": self.lexical_rows,
        }
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.index_description = self.dense.description
        manifest = {
            "format": FORMAT,
            "generation": generation,
            "encrypted": self.cipher is not None,
            "embedder": {"name": self.embedder_name, "dimension": self.dimension},
            "index": self.index_description,
            "roots": self.roots,
            "forgotten": self.forgotten,
            "files": {path: asdict(entry) for path, entry in self.files.items()},
            "next_chunk_id": self.next_chunk_id,
        }
        if self._pending_weights is not None:
            self.embedder_weights = f"embedder-{generation}.lmem"
            write_sealed(self._path(self.embedder_weights), self._pending_weights, self.cipher)
            self._pending_weights = None
        if self.embedder_weights:
            manifest["embedder"]["weights"] = self.embedder_weights
        write_sealed(self._path(f"chunks-{generation}.lmem"), chunks_json, self.cipher)
        write_sealed(self._path(f"index-{generation}.lmem"), buffer.getvalue(), self.cipher)
        dense_file = self._write_dense_file(generation) if index_in_own_file else None
        if dense_file:
            manifest["dense_file"] = dense_file
        with _flock(self.directory / "commit.lock", exclusive=True):
            write_sealed(self._path("manifest.lmem"), json.dumps(manifest).encode("utf-8"), self.cipher)
            self.generation, self.dense_file = generation, dense_file
            self._remove_other_generations()
        if dense_file and map_index:  # a view kept after the write (serve, the TUI) holds no copy in RAM
            self.dense.use_mapped(read_mapped_index(self._path(dense_file["name"])))

    def _write_dense_file(self, generation: int) -> dict:
        path = self._path(f"dense-{generation}.faiss")
        write_index_file(self.dense.index, path)
        # Hashed as written to disk, so a later check compares against the file, not our intent.
        return {"name": path.name, "size": path.stat().st_size, "sha256": _file_sha256(path)}

    def _remove_other_generations(self) -> None:
        keep = {f"chunks-{self.generation}.lmem", f"index-{self.generation}.lmem", self.embedder_weights}
        if self.dense_file:
            keep.add(self.dense_file["name"])
        for path in self.directory.iterdir():
            stale_data = (
                path.name.startswith(("chunks-", "index-", "embedder-", "dense-")) and path.name not in keep
            )
            if stale_data or path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)


def _dense_file_record(record: dict | None, generation: int) -> dict | None:
    """The manifest's record of dense-<gen>.faiss, checked to name this generation's file."""
    if record is None:
        return None
    checked = {"name": str(record["name"]), "size": int(record["size"]), "sha256": str(record["sha256"])}
    if checked["name"] != f"dense-{generation}.faiss":
        raise ValueError(f"{checked['name']} is not the index file of generation {generation}")
    return checked


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
