"""Catch what llama.cpp prints to the process's stdout/stderr, to keep it off the user's terminal
and to quote it when a native call fails."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class CapturedOutput:
    text: str = ""

    def tail(self, count: int = 5) -> str:
        """The last ``count`` non-blank lines: usually where llama.cpp says why it failed."""
        return "\n".join([line for line in self.text.splitlines() if line.strip()][-count:])


@contextlib.contextmanager
def captured_native_output() -> Iterator[CapturedOutput]:
    captured = CapturedOutput()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")
