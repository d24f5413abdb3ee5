"""The ssh command lines Lantern uses and prints: keys only, never passwords."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Keys only; give up rather than hang on a prompt; notice a dead link within ~45 s.
KEY_ONLY_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", "PasswordAuthentication=no",
    "-o", "KbdInteractiveAuthentication=no",
    "-o", "ExitOnForwardFailure=yes",
    "-o", "ServerAliveInterval=15",
    "-o", "ServerAliveCountMax=3",
)  # fmt: skip


@dataclass(frozen=True)
class TunnelSpec:
    destination: str  # USER@HOST of the reachable server
    remote_port: int = 18484  # on the server's loopback
    local_port: int = 8484  # where `lantern serve` listens here
    ssh_port: int = 22
    identity: Path | None = None
    known_hosts: Path | None = None

    def __post_init__(self) -> None:
        user, at, host = self.destination.partition("@")
        if not at or not user or not host or self.destination.startswith("-") or " " in self.destination:
            raise ValueError(f"expected USER@HOST, got {self.destination!r}")


def reverse_tunnel_command(spec: TunnelSpec) -> list[str]:
    """ssh -R: the server's loopback port reaches `lantern serve` on this machine."""
    command = ["ssh", "-N", *KEY_ONLY_OPTIONS, "-p", str(spec.ssh_port)]
    if spec.identity is not None:
        command += ["-i", str(spec.identity), "-o", "IdentitiesOnly=yes"]
    if spec.known_hosts is not None:
        command += ["-o", f"UserKnownHostsFile={spec.known_hosts}", "-o", "StrictHostKeyChecking=accept-new"]
    command += ["-R", f"127.0.0.1:{spec.remote_port}:127.0.0.1:{spec.local_port}", spec.destination]
    return command


def phone_command(destination: str, remote_port: int, local_port: int, ssh_port: int = 22) -> str:
    """What a phone (Termux) or laptop runs: its own port forwarded to the server's loopback port."""
    return f"ssh -N -p {ssh_port} -L {local_port}:127.0.0.1:{remote_port} {destination}"


def direct_command(home: str, local_port: int, ssh_port: int = 22) -> str:
    """When the home machine itself is reachable over SSH: forward straight to `lantern serve`."""
    return f"ssh -N -p {ssh_port} -L {local_port}:127.0.0.1:{local_port} {home}"
