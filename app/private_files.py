"""Files that hold the user's text or what was learned from it (input history, twins' datasets,
checkpoints and adapters): sealed with the data key when the home is encrypted, plain otherwise.

A sealed file is rag/sealed_file.py's format (magic, nonce, AES-GCM with the file's name as
associated data); writes are atomic either way.
"""

from __future__ import annotations

from pathlib import Path

from app.atomic import atomic_write_bytes
from app.errors import LanternError
from rag.crypto import Cipher
from rag.errors import TamperedFileError
from rag.sealed_file import MAGIC, read_sealed, write_sealed


def is_sealed(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def write_private(path: Path, data: bytes, cipher: Cipher | None) -> None:
    """Write ``data`` to ``path`` atomically (mode 0600), sealed when ``cipher`` is given."""
    if cipher is None:
        atomic_write_bytes(path, data)
    else:
        write_sealed(path, data, cipher)


def read_private(path: Path, cipher: Cipher | None) -> bytes:
    """The contents of ``path``, opened with ``cipher`` when sealed. A plain file in an encrypted
    home was put there by someone else: refused, named."""
    if is_sealed(path):
        if cipher is None:
            raise LanternError(f"{path} is sealed but the data home is not encrypted; it belongs elsewhere")
        return read_sealed(path, cipher)
    if cipher is not None:
        raise TamperedFileError(
            f"{path} is not sealed although the data home is encrypted; it was replaced or "
            "copied in (remove it, or seal the home again with 'lantern init --encrypt')"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LanternError(f"cannot read {path}: {exc.strerror}") from None
