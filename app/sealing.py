"""Turning encryption on for a data home that already holds data, and changing its passphrase.

``lantern init --encrypt`` first writes the new keyring as ``keyring.json.pending``, then seals
each part in place, each step atomic and safe to repeat (a part already sealed is skipped), and
last renames the keyring to ``keyring.json``. Killed at any point, the next start that unlocks the
home (with the same passphrase) finds the pending keyring and finishes the remaining steps; until
then nothing is lost: every file is either its old plain self or its new sealed self.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.conversations import is_plain_database, seal_database
from app.errors import LanternError
from app.home_key import DATA_KEY_BYTES, HomeKeyring, subkey
from app.private_files import is_sealed, write_private
from rag.crypto import Cipher, Keyring, derive_key
from rag.errors import WrongKeyError

if TYPE_CHECKING:
    from app.assistant import Assistant

HISTORY_FILE = "chat_history"


@dataclass
class SealReport:
    sealed: list[str] = field(default_factory=list)  # what this run sealed, in order
    removed: list[str] = field(default_factory=list)  # derived files deleted rather than sealed
    resumed: bool = False  # an earlier, interrupted run was finished


def _silent(_line: str) -> None:
    pass


def encrypt_home(assistant: Assistant, secret: bytes, say: Callable[[str], None] = _silent) -> SealReport:
    """Seal everything in the data home under a new data key wrapped by ``secret``."""
    key = assistant.key
    if key.keyring_path.exists():
        raise LanternError(
            f"the data home {assistant.home.root} is already encrypted; "
            "change its passphrase with 'lantern passphrase change'"
        )
    with assistant.in_use.alone("run 'lantern init --encrypt'"):
        if key.pending_path.exists():  # an earlier run was killed: the same secret finishes it
            data_key = HomeKeyring.read(key.pending_path).unwrap(secret)
            resumed = True
        else:
            data_key = _legacy_memory_key(assistant, secret) or os.urandom(DATA_KEY_BYTES)
            HomeKeyring.wrap(data_key, secret).write(key.pending_path)
            resumed = False
        report = finish_sealing(assistant, data_key, say)
    report.resumed = resumed
    key.unlock_with(secret)
    return report


def _legacy_memory_key(assistant: Assistant, secret: bytes) -> bytes | None:
    """A memory encrypted on its own before: its key becomes the data key, so it stays sealed
    as it is and only its keyring changes."""
    path = assistant.memory.directory / "keyring.json"
    if not path.exists():
        return None
    from rag.crypto import read_keyring

    keyring = read_keyring(path.read_bytes(), str(path))
    if not isinstance(keyring, Keyring):
        return None
    keyring.unlock(secret)  # WrongKeyError: the memory's passphrase must be the home's
    return derive_key(secret, keyring.params)


def finish_sealing(assistant: Assistant, data_key: bytes, say: Callable[[str], None] = _silent) -> SealReport:
    """Seal every part not sealed yet, then make the pending keyring the keyring. Safe to repeat."""
    key, home = assistant.key, assistant.home
    cipher = Cipher(data_key)
    report = SealReport()

    def done(what: str) -> None:
        report.sealed.append(what)
        say(f"sealed {what}")

    assistant.close_conversations()
    database = home.conversations_db
    if database.exists() and database.stat().st_size > 0 and is_plain_database(database):
        seal_database(database, subkey(data_key, "lantern conversations sqlcipher"))
        done(database.name)
    history = home.root / HISTORY_FILE
    if history.exists() and not is_sealed(history):
        write_private(history, history.read_bytes(), cipher)
        done(history.name)
    for path in assistant.twins.seal_all(cipher):
        done(str(path.relative_to(home.root)))
    merged = assistant.twins.merged_models()  # whole models, kept plain for llama.cpp: named, not sealed
    for entry in (e for e in assistant.models.list() if e.name in merged):
        say(
            f"not sealed: {entry.path} (a merged twin model; remove it with "
            f"'lantern models rm {entry.name}' if it must not stay readable)"
        )
    memory_was_sealed = assistant.memory.is_encrypted()
    assistant.memory.seal(cipher)
    if not memory_was_sealed:
        done("memory")
    if home.kv_states_dir.exists():  # saved chat states: derived from chats, so deleted, not kept
        shutil.rmtree(home.kv_states_dir)
        report.removed.append(home.kv_states_dir.name)
        say(f"removed {home.kv_states_dir.name} (saved chat states)")
    if key.pending_path.exists():
        os.replace(key.pending_path, key.keyring_path)
    return report


def change_passphrase(assistant: Assistant, old_secret: bytes, new_secret: bytes) -> None:
    """Re-wrap the data key under ``new_secret``; nothing else is re-encrypted."""
    key = assistant.key
    if not key.keyring_path.exists():
        raise LanternError("the data home is not encrypted; turn it on with 'lantern init --encrypt'")
    if new_secret == old_secret:
        raise LanternError("the new passphrase is the old one; nothing changed")
    try:
        data_key = HomeKeyring.read(key.keyring_path).unwrap(old_secret)
    except WrongKeyError:
        raise WrongKeyError("the current passphrase (or key file) is wrong; nothing changed") from None
    HomeKeyring.wrap(data_key, new_secret).write(key.keyring_path)
    key.forget()
