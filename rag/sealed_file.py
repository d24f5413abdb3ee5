"""One file of the memory on disk: verified on read, encrypted when the memory is.

Layout: 8-byte magic, one mode byte, then either ``sha256 || plaintext`` (plain memory) or
``nonce || AES-GCM ciphertext`` (encrypted memory, the file name as associated data, so a file
renamed or swapped for another fails to open). Writes are atomic: temp file, fsync, rename.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidTag

from app.atomic import atomic_write_bytes
from rag.crypto import Cipher
from rag.errors import MemoryStoreError, TamperedFileError

MAGIC = b"LNTMEM1\x00"
_PLAIN, _SEALED = b"P", b"E"


def write_sealed(path: Path, data: bytes, cipher: Cipher | None) -> None:
    if cipher is None:
        body = _PLAIN + hashlib.sha256(data).digest() + data
    else:
        body = _SEALED + cipher.seal(data, path.name.encode())
    atomic_write_bytes(path, MAGIC + body)


def read_sealed(path: Path, cipher: Cipher | None) -> bytes:
    """The verified contents of ``path``; TamperedFileError names the file if it does not verify."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TamperedFileError(f"{path} is missing; restore it from a backup") from None
    except OSError as exc:
        raise MemoryStoreError(f"cannot read {path}: {exc.strerror}") from None
    damaged = TamperedFileError(f"{path} is damaged or was altered; Lantern did not open it")
    if raw[: len(MAGIC)] != MAGIC:
        raise damaged
    mode, body = raw[len(MAGIC) : len(MAGIC) + 1], raw[len(MAGIC) + 1 :]
    if mode == _PLAIN:
        if cipher is not None:
            raise TamperedFileError(f"{path} is not encrypted although the memory is; it was replaced")
        digest, data = body[:32], body[32:]
        if hashlib.sha256(data).digest() != digest:
            raise damaged
        return data
    if mode == _SEALED:
        if cipher is None:
            raise TamperedFileError(f"{path} is encrypted but the memory has no keyring")
        try:
            return cipher.open(body, path.name.encode())
        except (InvalidTag, ValueError):
            raise damaged from None
    raise damaged
