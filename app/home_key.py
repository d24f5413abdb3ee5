"""The data home's one key: a random data key, wrapped by a key derived from the passphrase.

``keyring.json`` at the home's root holds the scrypt parameters and the data key sealed under the
passphrase's key (AES-256-GCM); no secret lies in it. Changing the passphrase re-wraps the data key
and re-encrypts nothing. Everything Lantern writes from the notes (memory, conversations, input
history, twins) is sealed with the data key or a key derived from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.atomic import atomic_write_bytes
from app.errors import LanternError
from rag.crypto import Cipher, ScryptParams, _b64, _unb64, derive_key, digested_json, verified_json
from rag.errors import TamperedFileError, WrongKeyError

KEYRING_FILE = "keyring.json"
PENDING_KEYRING_FILE = "keyring.json.pending"  # written first by `init --encrypt`; see app/sealing.py
_FORMAT = "lantern-home-keyring-1"
_WRAP_AAD = b"lantern data key"
DATA_KEY_BYTES = 32


@dataclass(frozen=True)
class HomeKeyring:
    params: ScryptParams
    wrapped_key: bytes  # the data key sealed under scrypt(passphrase)

    @classmethod
    def wrap(cls, data_key: bytes, secret: bytes) -> HomeKeyring:
        params = ScryptParams.fresh()
        return cls(params, Cipher(derive_key(secret, params)).seal(data_key, _WRAP_AAD))

    def unwrap(self, secret: bytes) -> bytes:
        try:
            return Cipher(derive_key(secret, self.params)).open(self.wrapped_key, _WRAP_AAD)
        except InvalidTag:
            raise WrongKeyError(
                "wrong passphrase or key file for this data home; nothing was opened "
                "(type it again, or check LANTERN_PASSPHRASE / --key-file)"
            ) from None

    def to_bytes(self) -> bytes:
        body = self._body()
        return digested_json(body)

    def _body(self) -> dict:
        p = self.params
        return {
            "format": _FORMAT,
            "kdf": {"name": "scrypt", "salt": _b64(p.salt), "n": p.n, "r": p.r, "p": p.p},
            "cipher": "AES-256-GCM",
            "wrapped_key": _b64(self.wrapped_key),
        }

    @classmethod
    def read(cls, path: Path) -> HomeKeyring:
        damaged = TamperedFileError(f"{path} is damaged or was altered; the data home cannot be unlocked")
        try:
            raw = verified_json(path.read_bytes())
            if raw.get("format") != _FORMAT:
                raise damaged
            kdf = raw["kdf"]
            params = ScryptParams(_unb64(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
            return cls(params, _unb64(raw["wrapped_key"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise damaged from None

    def write(self, path: Path) -> None:
        atomic_write_bytes(path, self.to_bytes())


def subkey(data_key: bytes, purpose: str) -> bytes:
    """A key of its own for one use of the data key (the conversation database's, for one)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(data_key)


def read_key_file(path: Path) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise LanternError(f"cannot read the key file {path}: {exc.strerror}") from None


def secret_from_environment(
    key_file: str = "", ask: Callable[[str], str] | None = None
) -> Callable[[], bytes]:
    """Where the secret comes from, in order: a key file (given, or LANTERN_KEY_FILE),
    LANTERN_PASSPHRASE, then asking the user."""

    def secret() -> bytes:
        path = key_file or os.environ.get("LANTERN_KEY_FILE", "")
        if path:
            return read_key_file(Path(path))
        passphrase = os.environ.get("LANTERN_PASSPHRASE")
        if passphrase is None and ask is not None:
            passphrase = ask("Passphrase: ")
        if passphrase is None:
            raise LanternError(
                "the data home is encrypted and locked: set LANTERN_PASSPHRASE or LANTERN_KEY_FILE, "
                "pass --key-file, or run in a terminal to be asked"
            )
        return passphrase.encode("utf-8")

    return secret


def _locked() -> bytes:
    raise LanternError("the data home is encrypted and locked; restart lantern to enter the passphrase")


class HomeKey:
    """Unlocks the data home once per process: the secret is asked for (or read) once, and the
    data key kept in memory. A secret that did not unlock is forgotten, so the next try asks again.

    Homes encrypted before the whole home was (only ``memory/keyring.json``, derived straight
    from the passphrase) keep working: their memory opens with ``secret()``, the rest is plain
    until ``lantern init --encrypt`` seals it."""

    def __init__(self, root: Path, secret: Callable[[], bytes]):
        self.root = Path(root)
        self._source = secret
        self._secret: bytes | None = None
        self._data_key: bytes | None = None
        self.on_pending: Callable[[HomeKey], None] | None = None  # finishes an interrupted sealing

    @classmethod
    def create(cls, root: Path, secret: bytes) -> HomeKey:
        """A new, unlocked key for an empty home: a fresh data key wrapped by ``secret``. (A
        home with data is sealed with app/sealing.encrypt_home, which uses this keyring too.)"""
        key = cls(root, lambda: secret)
        key.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        HomeKeyring.wrap(os.urandom(DATA_KEY_BYTES), secret).write(key.keyring_path)
        key.data_key()
        return key

    @property
    def keyring_path(self) -> Path:
        return self.root / KEYRING_FILE

    @property
    def pending_path(self) -> Path:
        return self.root / PENDING_KEYRING_FILE

    def is_encrypted(self) -> bool:
        """The whole home is (or is being) sealed."""
        return self.keyring_path.exists() or self.pending_path.exists()

    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = self._source()
        return self._secret

    def forget(self) -> None:
        self._secret = None
        self._data_key = None

    def stop_asking(self) -> None:
        """No more prompts (a full-screen app owns the terminal now): locked means an error."""
        if self._secret is None:
            self._source = _locked

    def unlock_with(self, secret: bytes) -> None:
        """Hold a secret given directly (the TUI's passphrase screen), checked at once when the
        home is encrypted: raises WrongKeyError (and forgets it) when it does not fit."""
        self._secret = secret
        if self.is_encrypted():
            self.data_key()

    @property
    def unlocked(self) -> bool:
        return self._data_key is not None

    def data_key(self) -> bytes:
        """The data key; asks for the secret the first time. Finishes an interrupted sealing."""
        if self._data_key is None:
            pending = not self.keyring_path.exists() and self.pending_path.exists()
            path = self.pending_path if pending else self.keyring_path
            if not path.exists():
                raise LanternError("the data home is not encrypted; turn it on with 'lantern init --encrypt'")
            keyring = HomeKeyring.read(path)
            try:
                self._data_key = keyring.unwrap(self.secret())
            except WrongKeyError:
                self.forget()
                raise
            if pending and self.on_pending is not None:
                try:
                    self.on_pending(self)
                except BaseException:
                    self._data_key = None  # half sealed: nothing may be opened until it is finished
                    raise
        return self._data_key

    def data_cipher(self) -> Cipher:
        return Cipher(self.data_key())

    def cipher(self) -> Cipher | None:
        """The data key's cipher for sealed files; None when the home is not encrypted."""
        return Cipher(self.data_key()) if self.is_encrypted() else None

    def database_key(self) -> bytes | None:
        """The conversation database's SQLCipher key; None when the home is not encrypted."""
        return subkey(self.data_key(), "lantern conversations sqlcipher") if self.is_encrypted() else None
