"""Files Lantern writes are whole or absent, even when the process is killed mid-write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import gguf
import numpy as np

from tests.conftest import run_lantern

COPY_IN_CHILD = """
import sys
from pathlib import Path
from app.atomic import atomic_copy
atomic_copy(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_a_copy_killed_midway_leaves_no_partial_model(tmp_path):
    # A FIFO makes the copy block half-way, so SIGKILL lands mid-write, every time.
    fifo = tmp_path / "incoming.gguf"
    os.mkfifo(fifo)
    destination = tmp_path / "store" / "model.gguf"
    destination.parent.mkdir()
    child = subprocess.Popen([sys.executable, "-c", COPY_IN_CHILD, str(fifo), str(destination)])
    with open(fifo, "wb") as writer:
        writer.write(b"GGUF" + b"\0" * (4 << 20))
        writer.flush()
        deadline = time.monotonic() + 30
        while not list(destination.parent.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        partial = list(destination.parent.iterdir())
        assert partial and all(p.name.endswith(".tmp") for p in partial)
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not destination.exists()


def test_the_next_add_clears_copies_left_by_a_killed_add(home, bundled_model):
    run_lantern("models", "list")
    leftover = home / "models" / ".model.gguf.abc123.tmp"
    leftover.write_bytes(b"GGUF half a model")
    assert run_lantern("models", "add", str(bundled_model), "--name", "copy").returncode == 0
    assert not leftover.exists()
    assert sorted(p.name for p in (home / "models").iterdir()) == ["copy.gguf"]


def test_an_add_leaves_the_temp_file_of_a_conversion_still_writing(home, bundled_model):
    import fcntl

    run_lantern("models", "list")
    in_progress = home / "models" / ".quantized.gguf.xyz789.tmp"
    with open(in_progress, "wb") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)  # as a live `lantern quantize` holds it
        assert run_lantern("models", "add", str(bundled_model), "--name", "copy").returncode == 0
        assert in_progress.exists()


def test_a_damaged_registry_is_reported_not_overwritten(home):
    run_lantern("models", "list")
    registry = home / "models.json"
    registry.write_text('{"models": {"half')
    result = run_lantern("models", "list")
    assert result.returncode != 0
    assert b"models.json is damaged" in result.stderr
    assert registry.read_text() == '{"models": {"half'


def test_a_valid_gguf_llama_cpp_cannot_run_is_refused_at_load_with_a_reason(home, tmp_path):
    path = tmp_path / "alien.gguf"
    writer = gguf.GGUFWriter(path, arch="no-such-architecture")
    writer.add_context_length(128)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    added = run_lantern("models", "add", str(path))
    assert added.returncode == 0, added.stderr  # a well-formed GGUF passes validation
    info = json.loads(run_lantern("models", "info", "alien", "--json").stdout)
    assert info["architecture"] == "no-such-architecture"
    assert info["chat_template_source"].startswith("fallback")

    result = run_lantern("ask", "hi", "--model", "alien")
    assert result.returncode != 0
    err = result.stderr.decode()
    assert "llama.cpp could not load" in err and "Traceback" not in err
