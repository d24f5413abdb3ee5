"""A phone's way in: a real Debian sshd on loopback, `lantern tunnel up` against it, a chat
through the forwarded port, and a reconnect after the ssh process is killed."""

from __future__ import annotations

import getpass
import json
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import openai
import pytest

from tests.api_server import free_port, start_server
from tests.conftest import LANTERN, run_lantern

SSHD = Path("/usr/sbin/sshd")


def _wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def sshd(tmp_path):
    """Debian's sshd on a loopback port with a throw-away host key and one authorized client key."""
    folder = tmp_path / "sshd"
    folder.mkdir()
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    authorized = folder / "authorized_keys"
    authorized.write_text((folder / "client_key.pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"AllowTcpForwarding yes\nGatewayPorts no\nPidFile {folder / 'sshd.pid'}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    _wait_for_port(port)
    yield port, folder / "client_key", folder / "known_hosts"
    process.terminate()
    process.wait(timeout=10)


def _tunnel_state(home: Path) -> dict:
    try:
        return json.loads((home / "tunnel.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_state(home: Path, condition, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _tunnel_state(home)
        if condition(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"tunnel never reached the state; last: {_tunnel_state(home)}")


def _chat(url: str, token: str) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0, timeout=120)
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        temperature=0,
        max_tokens=12,
    )
    return reply.choices[0].message.content


@pytest.mark.skipif(not SSHD.exists(), reason="openssh-server is installed by 'make test'")
def test_a_chat_goes_through_the_tunnel_and_survives_a_killed_ssh(home, sshd):
    ssh_port, key, known_hosts = sshd
    server = start_server()
    remote_port = free_port()
    supervisor = subprocess.Popen(
        [
            str(LANTERN),
            "tunnel",
            "up",
            f"{getpass.getuser()}@127.0.0.1",
            "--ssh-port",
            str(ssh_port),
            "--remote-port",
            str(remote_port),
            "--port",
            str(server.url.rsplit(":", 1)[1]),
            "-i",
            str(key),
            "--known-hosts",
            str(known_hosts),
        ],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = _wait_state(home, lambda s: s.get("state") == "up")
        assert "Paris" in _chat(f"http://127.0.0.1:{remote_port}", server.token)
        status = run_lantern("tunnel", "status").stdout.decode()
        assert status.startswith("up:") and f"127.0.0.1:{remote_port}" in status

        os.kill(first["pid"], signal.SIGKILL)  # the link drops, as on a network change
        again = _wait_state(home, lambda s: s.get("state") == "up" and s.get("pid") != first["pid"])
        assert again["reconnects"] >= 1
        assert "Paris" in _chat(f"http://127.0.0.1:{remote_port}", server.token)
    finally:
        supervisor.send_signal(signal.SIGINT)  # Ctrl+C
        supervisor.wait(timeout=30)
        server.stop()
    assert _tunnel_state(home)["state"] == "stopped"


def test_a_destination_that_is_not_user_at_host_is_refused(home):
    result = run_lantern("tunnel", "up", "--", "-oProxyCommand=evil")
    assert result.returncode != 0 and b"USER@HOST" in result.stderr


def _guide_line(guide: str, starts: str) -> list[str]:
    """The words of the guide's one command line that begins with ``starts``."""
    [line] = [line.strip() for line in guide.splitlines() if line.strip().startswith(starts)]
    return shlex.split(line)


def _forward_from_this_machine(printed: list[str], ssh_port: int, key: Path, known_hosts: Path):
    """Run a printed `ssh -N -p 22 -L PORT:HOST:PORT DEST` as the phone would, with two swaps this
    one-machine test needs: the test sshd's port for 22, and a free local port, since the printed
    one is where `lantern serve` already listens here. Returns the process and that local port."""
    assert printed[:4] == ["ssh", "-N", "-p", "22"] and printed[4] == "-L", printed
    _, target_host, target_port = printed[5].split(":")
    local = free_port()
    process = subprocess.Popen(
        [
            "ssh", "-N", "-p", str(ssh_port),
            "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=accept-new",
            "-o", "ExitOnForwardFailure=yes",
            "-L", f"{local}:{target_host}:{target_port}", *printed[6:],
        ],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for_port(local)
    return process, local


@pytest.mark.skipif(not SSHD.exists(), reason="openssh-server is installed by 'make test'")
def test_the_guides_commands_reach_lantern_directly_and_through_a_server(home, sshd):
    ssh_port, key, known_hosts = sshd
    server = start_server()
    supervisor, phones = None, []
    try:
        serve_port, remote_port = int(server.url.rsplit(":", 1)[1]), free_port()
        me = f"{getpass.getuser()}@127.0.0.1"
        guided = run_lantern(
            "tunnel", "guide", "--server", me, "--home", me,
            "--port", str(serve_port), "--remote-port", str(remote_port),
        )  # fmt: skip
        assert guided.returncode == 0, guided.stderr
        guide = guided.stdout.decode()
        assert f"Lantern listens on 127.0.0.1:{serve_port} only" in guide
        assert guide.count(f"then open http://127.0.0.1:{serve_port}/ there") == 2

        up = _guide_line(guide, "lantern tunnel up")
        direct, via_server = (
            shlex.split(line.split(":", 1)[1])
            for line in guide.splitlines()
            if line.strip().startswith("on the phone")
        )
        # On one machine the server's loopback is this one's, so a mixed-up port could still reach
        # Lantern; the forwards must be exactly these.
        assert direct[4:] == ["-L", f"{serve_port}:127.0.0.1:{serve_port}", me]
        assert via_server[4:] == ["-L", f"{serve_port}:127.0.0.1:{remote_port}", me]
        test_sshd = ["--ssh-port", str(ssh_port), "-i", str(key), "--known-hosts", str(known_hosts)]
        supervisor = subprocess.Popen(
            [str(LANTERN), *up[1:], *test_sshd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_state(home, lambda s: s.get("state") == "up")
        for printed in (direct, via_server):
            phone, local = _forward_from_this_machine(printed, ssh_port, key, known_hosts)
            phones.append(phone)
            phone_client = openai.OpenAI(base_url=f"http://127.0.0.1:{local}/v1", api_key=server.token)
            assert [m.id for m in phone_client.models.list()][0] == "smollm2-135m-instruct", printed
    finally:
        for phone in phones:
            phone.terminate()
            phone.wait(timeout=10)
        if supervisor is not None:
            supervisor.send_signal(signal.SIGINT)
            supervisor.wait(timeout=30)
        server.stop()
