"""Paired devices: a named bearer token per phone or browser, stored only as a hash, revocable."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.atomic import atomic_write_text
from app.errors import LanternError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOKEN_PREFIX = "lnt_"


@dataclass(frozen=True)
class Device:
    name: str
    token_sha256: str
    paired_at: str
    revoked: bool = False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class DeviceRegistry:
    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> dict[str, Device]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {d["name"]: Device(**d) for d in data["devices"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise LanternError(
                f"{self.path} is damaged ({exc}); move it aside and pair your devices again"
            ) from None

    def _write(self, devices: dict[str, Device]) -> None:
        atomic_write_text(self.path, json.dumps({"devices": [asdict(d) for d in devices.values()]}, indent=2))

    def pair(self, name: str) -> str:
        """A new token for ``name`` (shown once; only its hash is kept). Re-pairing replaces it."""
        if not _NAME.match(name):
            raise LanternError("a device name is 1-64 letters, digits, '.', '_' or '-'")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        devices = self._read()
        devices[name] = Device(name, _digest(token), datetime.now(UTC).isoformat(timespec="seconds"))
        self._write(devices)
        return token

    def revoke(self, name: str) -> None:
        devices = self._read()
        if name not in devices:
            raise LanternError(f"no paired device {name!r}; see 'lantern devices list'")
        devices[name] = Device(devices[name].name, devices[name].token_sha256, devices[name].paired_at, True)
        self._write(devices)

    def list(self) -> list[Device]:
        return list(self._read().values())

    def verify(self, token: str) -> Device | None:
        """The device holding ``token``, or None. Every stored hash is compared in constant time,
        and all of them are compared, so timing tells nothing about which one came close."""
        digest = _digest(token)
        found = None
        for device in self._read().values():
            if hmac.compare_digest(digest, device.token_sha256) and not device.revoked:
                found = device
        return found
