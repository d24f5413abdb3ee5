"""`lantern pair`, `lantern devices` and `lantern serve` from the shell."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api_server import free_port
from tests.conftest import LANTERN, lantern_at


@dataclass
class Served:
    home: Path
    port: int
    url: str


def _wait_until_serving(process: subprocess.Popen, url: str, limit_s: float = 300) -> None:
    """Return once `lantern serve` answers its health route; fail with its output if it exits."""
    deadline = time.monotonic() + limit_s
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"lantern serve did not answer within {limit_s:.0f} s")
        try:
            if httpx.get(url + "/v1/lantern/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.2)
    raise AssertionError(f"lantern serve exited with {process.returncode}:\n{process.stderr.read()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`lantern serve` started from the shell as a user would, with a data home of its own."""
    home = tmp_path_factory.mktemp("serve-home")
    port = free_port()
    process = subprocess.Popen(
        [str(LANTERN), "serve", "--port", str(port)],
        env={**os.environ, "LANTERN_HOME": str(home)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_serving(process, f"http://127.0.0.1:{port}")
        yield Served(home, port, f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=20)


def _models(served: Served, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(served.url + "/v1/models", headers=headers, timeout=30)


def _listening_addresses(port: int) -> set[str]:
    """Every local address on which some socket listens on ``port``, from the kernel's tables."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():  # no IPv6 on this machine
            continue
        for row in table.read_text().splitlines()[1:]:
            fields = row.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # 32-bit words, each in the host's byte order
            if sys.byteorder == "little":
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(raw)))
    return found


def test_serve_answers_a_paired_device_and_listens_on_loopback_only(served):
    token = json.loads(lantern_at(served.home, "pair", "desk", "--json").stdout)["token"]
    models = _models(served, token)
    assert models.status_code == 200, models.text
    assert models.json()["data"][0]["id"] == "smollm2-135m-instruct"
    assert _models(served).status_code == 401

    assert _listening_addresses(served.port) == {"127.0.0.1"}
    with socket.socket() as other_loopback:  # 127.0.0.2 is this machine too, but not the bound address
        assert other_loopback.connect_ex(("127.0.0.2", served.port)) != 0


def test_pairing_prints_a_token_once_and_a_revoked_device_is_refused(served):
    paired = json.loads(lantern_at(served.home, "pair", "phone", "--json").stdout)
    assert set(paired) == {"name", "token", "url"} and paired["token"].startswith("lnt_")
    assert paired["url"] == "http://127.0.0.1:8484"
    assert paired["token"] not in (served.home / "devices.json").read_text()  # only its hash is kept

    shown = lantern_at(served.home, "pair", "laptop").stdout
    assert "█" in shown  # a QR code of the URL with the token
    laptop = re.search(r"lnt_[A-Za-z0-9_-]+", shown).group()
    assert _models(served, paired["token"]).status_code == 200
    assert _models(served, laptop).status_code == 200

    assert lantern_at(served.home, "devices", "revoke", "phone").returncode == 0
    refused = _models(served, paired["token"])
    assert refused.status_code == 401 and "pair" in refused.json()["error"]["message"]
    assert _models(served, laptop).status_code == 200  # the other device keeps working

    listing = {
        line.split()[0]: line for line in lantern_at(served.home, "devices", "list").stdout.splitlines()
    }
    assert listing["phone"].endswith("(revoked)") and not listing["laptop"].endswith("(revoked)")
    missing = lantern_at(served.home, "devices", "revoke", "tablet")
    assert missing.returncode == 1 and "no paired device 'tablet'" in missing.stderr
    bad = lantern_at(served.home, "pair", "../etc")
    assert bad.returncode == 1 and "device name" in bad.stderr


def test_serve_warns_when_told_to_listen_beyond_loopback(home):
    wide = subprocess.Popen(
        [str(LANTERN), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = wide.stderr.readline()
    finally:
        wide.terminate()
        wide.wait(timeout=20)
    assert first_line.startswith("warning: listening on 0.0.0.0, beyond this computer")
