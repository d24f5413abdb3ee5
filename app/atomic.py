"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(path: Path, mode: int) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``path``; once it is written and synced, rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    fcntl.flock(fd, fcntl.LOCK_EX)  # marks the temp file as being written (see is_abandoned)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    with _replacing(path, mode) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str, mode: int = 0o600) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_copy(source: Path, destination: Path, mode: int = 0o600) -> None:
    """Copy a (possibly large) file so ``destination`` appears only once complete."""
    with _replacing(destination, mode) as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, length=8 * 1024 * 1024)


@contextlib.contextmanager
def atomic_output_path(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temp path beside ``path`` for a writer that wants a file name (llama.cpp, GGUFWriter);
    it becomes ``path`` only if the block succeeds, and is removed otherwise."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    fcntl.flock(fd, fcntl.LOCK_EX)  # held while the writer works: the file is not abandoned
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    fsync_directory(path.parent)


def is_abandoned(temp_file: Path) -> bool:
    """Whether a temp file left by an atomic write has no live writer (its process died): writers
    hold an exclusive lock on it until they rename or remove it."""
    try:
        fd = os.open(temp_file, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
