"""Keep a reverse tunnel open: run ssh, notice when it dies, reconnect with backoff, report state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from app.atomic import atomic_write_text
from tunnel.commands import TunnelSpec, reverse_tunnel_command

UP_AFTER_S = 2.0  # ssh with ExitOnForwardFailure still running after this: the forward is set up
MAX_BACKOFF_S = 30.0


@dataclass
class TunnelState:
    state: str  # connecting | up | retrying | stopped
    destination: str
    remote_port: int
    local_port: int
    pid: int | None = None
    supervisor_pid: int | None = None
    since: float = 0.0
    reconnects: int = 0
    last_error: str = ""


def read_state(path: Path) -> TunnelState | None:
    try:
        return TunnelState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


class TunnelSupervisor:
    def __init__(self, spec: TunnelSpec, state_file: Path, log=print):
        self.spec = spec
        self.state_file = state_file
        self.log = log
        self.state = TunnelState(
            "connecting",
            spec.destination,
            spec.remote_port,
            spec.local_port,
            supervisor_pid=os.getpid(),
            since=time.time(),
        )
        self._stopping = False
        self._process: subprocess.Popen | None = None

    def _set(self, state: str, **changes) -> None:
        self.state.state = state
        self.state.since = time.time()
        for key, value in changes.items():
            setattr(self.state, key, value)
        atomic_write_text(self.state_file, json.dumps(asdict(self.state)))
        self.log(f"tunnel {state}" + (f": {self.state.last_error}" if state == "retrying" else ""))

    def stop(self, *_args) -> None:
        self._stopping = True
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def run(self) -> None:
        """Until stopped (SIGINT/SIGTERM): connect, wait for the link to drop, back off, repeat."""
        # Both signals only set a flag: the loop below notices within 0.1 s, wherever it is.
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        backoff = 1.0
        try:
            while not self._stopping:
                self._set("connecting", pid=None)
                started = time.monotonic()
                self._process = subprocess.Popen(
                    reverse_tunnel_command(self.spec),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                marked_up = False
                while self._process.poll() is None and not self._stopping:
                    if not marked_up and time.monotonic() - started > UP_AFTER_S:
                        self._set("up", pid=self._process.pid, last_error="")
                        marked_up = True
                    time.sleep(0.1)
                if self._stopping:
                    break
                error = (self._process.stderr.read() or "").strip().splitlines()
                # A link that worked comes back at once; one that never came up waits longer each time.
                backoff = 1.0 if marked_up else min(backoff * 2, MAX_BACKOFF_S)
                self._set(
                    "retrying",
                    pid=None,
                    reconnects=self.state.reconnects + 1,
                    last_error=error[-1] if error else f"ssh exited with {self._process.returncode}",
                )
                deadline = time.monotonic() + backoff
                while time.monotonic() < deadline and not self._stopping:
                    time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
            self._set("stopped", pid=None)
