"""`lantern pair`, `lantern devices` and `lantern serve` from the shell."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import httpx

from tests.api_server import free_port
from tests.conftest import LANTERN, run_lantern


def test_pairing_prints_a_token_once_and_devices_can_be_revoked(home):
    paired = json.loads(run_lantern("pair", "phone", "--json").stdout)
    assert set(paired) == {"name", "token", "url"} and paired["token"].startswith("lnt_")
    assert paired["url"] == "http://127.0.0.1:8484"
    assert paired["token"] not in (home / "devices.json").read_text()  # only its hash is kept

    shown = run_lantern("pair", "laptop").stdout.decode()
    assert "lnt_" in shown and "█" in shown  # the token and a QR code of the URL with it

    listing = run_lantern("devices", "list").stdout.decode()
    assert "phone" in listing and "laptop" in listing
    assert run_lantern("devices", "revoke", "phone").returncode == 0
    assert "phone" in run_lantern("devices", "list").stdout.decode().split("(revoked)")[0]
    missing = run_lantern("devices", "revoke", "tablet")
    assert missing.returncode == 1 and b"no paired device 'tablet'" in missing.stderr
    bad = run_lantern("pair", "../etc")
    assert bad.returncode == 1 and b"device name" in bad.stderr


def _outside_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent for UDP connect
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_serve_listens_on_loopback_only_and_warns_when_told_otherwise(home):
    port = free_port()
    server = subprocess.Popen([str(LANTERN), "serve", "--port", str(port)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/lantern/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        outside = _outside_address()
        if outside is not None:
            with socket.socket() as s:
                assert s.connect_ex((outside, port)) != 0, "lantern serve is reachable beyond loopback"
    finally:
        server.terminate()
        server.wait(timeout=20)

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
