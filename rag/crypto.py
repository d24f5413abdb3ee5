"""Keys for an encrypted memory: scrypt from a passphrase or key file, AES-256-GCM for every file."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from rag.errors import TamperedFileError, WrongKeyError

NONCE_BYTES = 12
_KEY_CHECK = b"lantern memory key check v1"


@dataclass(frozen=True)
class ScryptParams:
    salt: bytes
    n: int = 2**15  # about 0.1 s and 32 MiB per derivation: slow for guessing, quick for the user
    r: int = 8
    p: int = 1

    @classmethod
    def fresh(cls) -> ScryptParams:
        return cls(salt=os.urandom(16))


def derive_key(secret: bytes, params: ScryptParams) -> bytes:
    if not secret:
        raise WrongKeyError("the passphrase is empty; type one, or set LANTERN_PASSPHRASE")
    kdf = Scrypt(salt=params.salt, length=32, n=params.n, r=params.r, p=params.p)
    return kdf.derive(secret)


class Cipher:
    """AES-256-GCM with a fresh random nonce per message; ``aad`` binds a blob to its file name."""

    def __init__(self, key: bytes):
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt, raising InvalidTag if anything about the blob or its aad changed."""
        return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)


@dataclass(frozen=True)
class Keyring:
    """The plaintext description of how to get the key: KDF parameters and a key check."""

    params: ScryptParams
    check: bytes  # _KEY_CHECK sealed under the key: tells a wrong passphrase from a damaged file

    @classmethod
    def create(cls, secret: bytes) -> tuple[Keyring, Cipher]:
        params = ScryptParams.fresh()
        cipher = Cipher(derive_key(secret, params))
        return cls(params, cipher.seal(_KEY_CHECK, b"keyring")), cipher

    def unlock(self, secret: bytes) -> Cipher:
        cipher = Cipher(derive_key(secret, self.params))
        try:
            cipher.open(self.check, b"keyring")
        except InvalidTag:
            raise WrongKeyError(
                "wrong passphrase or key file for the encrypted memory; try again "
                "(LANTERN_PASSPHRASE or --key-file)"
            ) from None
        return cipher

    def to_bytes(self) -> bytes:
        body = self._body()
        return digested_json(body)

    def _body(self) -> dict:
        p = self.params
        return {
            "format": "lantern-keyring-1",
            "kdf": {"name": "scrypt", "salt": _b64(p.salt), "n": p.n, "r": p.r, "p": p.p},
            "cipher": "AES-256-GCM",
            "check": _b64(self.check),
        }

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> Keyring:
        damaged = TamperedFileError(
            f"{name} is damaged or was altered; the encrypted memory cannot be opened"
        )
        try:
            raw = verified_json(data)
            kdf = raw["kdf"]
            params = ScryptParams(_unb64(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
            return cls(params, _unb64(raw["check"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise damaged from None


@dataclass(frozen=True)
class DataKeyCheck:
    """The keyring of a memory sealed with the data home's key (app/home_key.py): a key check
    only; the key itself is unwrapped from the home's keyring."""

    check: bytes

    @classmethod
    def create(cls, cipher: Cipher) -> DataKeyCheck:
        return cls(cipher.seal(_KEY_CHECK, b"keyring"))

    def unlock(self, cipher: Cipher) -> Cipher:
        try:
            cipher.open(self.check, b"keyring")
        except InvalidTag:
            raise WrongKeyError(
                "the memory was sealed with another data home's key; it cannot be opened here"
            ) from None
        return cipher

    def to_bytes(self) -> bytes:
        body = {"format": DATA_KEY_FORMAT, "check": _b64(self.check)}
        return digested_json(body)


DATA_KEY_FORMAT = "lantern-memory-data-key-1"


def read_keyring(data: bytes, name: str) -> Keyring | DataKeyCheck:
    """A memory's keyring: its own scrypt key (memories encrypted before the whole home was), or
    a check of the data home's key."""
    try:
        raw = verified_json(data)
        if raw.get("format") == DATA_KEY_FORMAT:
            return DataKeyCheck(_unb64(raw["check"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TamperedFileError(
            f"{name} is damaged or was altered; the encrypted memory cannot be opened"
        ) from None
    return Keyring.from_bytes(data, name)


def digested_json(body: dict) -> bytes:
    """``body`` as JSON with a SHA-256 of its canonical form, so a changed byte is noticed."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return json.dumps({**body, "digest": digest}, indent=2).encode() + b"\n"


def verified_json(data: bytes) -> dict:
    """The body digested_json wrote; ValueError (or KeyError) when it does not verify."""
    raw = json.loads(data)
    digest = raw.pop("digest")
    if hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest() != digest:
        raise ValueError("the digest does not match")
    return raw


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
