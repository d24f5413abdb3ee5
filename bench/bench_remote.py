"""Lantern in front of a remote engine, against the same engine asked directly (issue 31).

One run starts the real `llama_cpp.server` with the bundled model on loopback (the anchor) and
`lantern serve` in front of it (`lantern models add-remote`), then streams the same greedy chat
alternately straight to the engine and through Lantern, with the official `openai` client, and
reports side by side: time to the first piece of text, and pieces per second after it (each SSE
chunk with text; llama_cpp.server sends one token per chunk).

Goals: streamed rate through Lantern >= 0.97x the engine's own; TTFT added <= 10 ms.

``--apart``: the engine gets CPU 0 alone (one thread), Lantern and the client CPU 1, as if the
engine ran on a machine of its own; without it all three share every core, so Lantern's relay
takes time from the engine.

Run: .venv/bin/python bench/bench_remote.py [--rounds 12] [--max-tokens 128] [--apart]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from openai import OpenAI

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.bundled import bundled_model_path  # noqa: E402

LANTERN = Path(sys.executable).parent / "lantern"
PROMPT = "Describe a lighthouse at night in a few sentences."
# Given by the client, so Lantern adds none of its own: both paths send the engine the same prompt.
SYSTEM = "You are a helpful assistant."


@dataclass
class Streamed:
    ttft_s: float
    pieces: int
    rate: float  # pieces per second after the first


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not start")


def stream_once(client: OpenAI, model: str, max_tokens: int) -> Streamed:
    started = time.perf_counter()
    first = None
    pieces = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        max_tokens=max_tokens,
        temperature=0,
        seed=1,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if first is None:
                first = time.perf_counter()
    ended = time.perf_counter()
    assert first is not None, "no text came"
    rate = (pieces - 1) / (ended - first) if pieces > 1 and ended > first else 0.0
    return Streamed(first - started, pieces, rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--apart", action="store_true", help="engine on CPU 0, Lantern and client on CPU 1")
    args = parser.parse_args()
    engine_cpus, lantern_cpus = ({0}, {1}) if args.apart else (os.sched_getaffinity(0),) * 2
    os.sched_setaffinity(0, lantern_cpus)  # the client; the processes started below say their own

    with tempfile.TemporaryDirectory(prefix="lantern-bench-remote-") as tmp:
        env = {**os.environ, "LANTERN_HOME": str(Path(tmp) / "home"), "HF_HUB_OFFLINE": "1"}
        engine_port, lantern_port = free_port(), free_port()
        engine_url = f"http://127.0.0.1:{engine_port}"
        engine = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path()),
             "--host", "127.0.0.1", "--port", str(engine_port), "--n_ctx", "2048",
             "--n_threads", str(len(engine_cpus)), "--interrupt_requests", "False"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, engine_cpus),
        )  # fmt: skip
        lantern = None
        try:
            wait_for(engine_url + "/v1/models", engine, "llama_cpp.server")
            subprocess.run([str(LANTERN), "models", "add-remote", "far", engine_url, "--context", "2048"],
                           env=env, check=True, capture_output=True)  # fmt: skip
            token = json.loads(
                subprocess.run(
                    [str(LANTERN), "pair", "bench", "--json"],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout  # fmt: skip
            )["token"]
            lantern = subprocess.Popen(
                [str(LANTERN), "serve", "--model", "far", "--port", str(lantern_port), "--slots", "1"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_for(f"http://127.0.0.1:{lantern_port}/v1/lantern/health", lantern, "lantern serve")
            direct = OpenAI(base_url=engine_url + "/v1", api_key="none", max_retries=0)
            fronted = OpenAI(base_url=f"http://127.0.0.1:{lantern_port}/v1", api_key=token, max_retries=0)
            engine_model = direct.models.list().data[0].id
            stream_once(direct, engine_model, 8)  # warm both paths once
            stream_once(fronted, "far", 8)
            runs: dict[str, list[Streamed]] = {"engine": [], "lantern": []}
            for round_number in range(args.rounds):
                order = [("engine", direct, engine_model), ("lantern", fronted, "far")]
                if round_number % 2:
                    order.reverse()  # neither path always goes first
                for name, client, model in order:
                    runs[name].append(stream_once(client, model, args.max_tokens))
        finally:
            for process in (lantern, engine):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)

    def median(name: str, field: str) -> float:
        return statistics.median(getattr(s, field) for s in runs[name])

    where = "engine on CPU 0, Lantern and client on CPU 1" if args.apart else "all on every core"
    print(f"{args.rounds} rounds, {args.max_tokens} tokens at most, greedy, {where}; medians")
    print("| path | TTFT ms | pieces/s after the first | pieces |")
    print("|---|---|---|---|")
    for name in ("engine", "lantern"):
        print(
            f"| {name} | {median(name, 'ttft_s') * 1000:.1f} | {median(name, 'rate'):.1f} |"
            f" {median(name, 'pieces'):.0f} |"
        )
    ratio = median("lantern", "rate") / median("engine", "rate")
    added = (median("lantern", "ttft_s") - median("engine", "ttft_s")) * 1000
    print(f"rate through Lantern / direct: {ratio:.3f}x (goal >= 0.97x)")
    print(f"TTFT added by Lantern: {added:+.1f} ms (goal <= 10 ms)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {k: [s.__dict__ for s in v] for k, v in runs.items()}
                | {"ratio": ratio, "ttft_added_ms": added}
            )
        )


if __name__ == "__main__":
    main()
