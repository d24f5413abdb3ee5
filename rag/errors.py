"""The memory's one error type: a message the user can act on."""

from __future__ import annotations

from app.errors import LanternError


class MemoryStoreError(LanternError):
    """Something about the memory store or its input the user has to fix."""


class WrongKeyError(MemoryStoreError):
    """The passphrase or key file does not open this memory."""


class TamperedFileError(MemoryStoreError):
    """A file of the memory does not verify: changed, damaged or swapped."""
