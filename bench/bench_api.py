"""Lantern's HTTP API against raw llama-cpp-python and llama-cpp-python's own server, side by side.

Same model (the bundled SmolLM2), same threads, same chat (explicit system + user message),
greedy, streamed. Three figures:
1. single-stream decode tokens/s: Lantern API vs raw `Llama.create_chat_completion(stream=True)`
   in this process vs `python -m llama_cpp.server`, alternating runs;
2. time to first token p50/p95 with 1 and 4 concurrent clients, for both servers;
3. aggregate tokens/s at 4 concurrent clients over a single stream's, and failed requests.

Run: .venv/bin/python bench/bench_api.py [--rounds 3] [--tokens 128]
(needs the bench extra: make bench installs it)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.bundled import bundled_model_path  # noqa: E402

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."},
]
LANTERN = Path(sys.executable).parent / "lantern"
THREADS = os.cpu_count() or 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code in (200, 401):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} never came up")


def stream_once(base: str, token: str | None, max_tokens: int) -> dict:
    """One streamed chat; returns ttft, decode tokens/s, tokens, error."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {
        "model": "served",
        "messages": MESSAGES,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    first = last = None
    tokens = 0
    usage_tokens = None
    try:
        with httpx.stream(
            "POST", base + "/v1/chat/completions", json=body, headers=headers, timeout=300
        ) as r:
            if r.status_code != 200:
                return {"error": f"HTTP {r.status_code}", "tokens": 0}
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"]["completion_tokens"]
                choices = chunk.get("choices") or []
                if choices and choices[0].get("delta", {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    tokens += 1
    except httpx.HTTPError as exc:
        return {"error": str(exc), "tokens": 0}
    tokens = usage_tokens or tokens
    if first is None:
        return {"error": "no tokens", "tokens": 0}
    rate = (tokens - 1) / (last - first) if last > first else 0.0
    return {"ttft": first - started, "rate": rate, "tokens": tokens, "error": None}


def raw_once(llm, max_tokens: int) -> dict:
    llm.reset()
    started = time.perf_counter()
    first = last = None
    tokens = 0
    for chunk in llm.create_chat_completion(MESSAGES, max_tokens=max_tokens, temperature=0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter()
            first = first or now
            last = now
            tokens += 1
    return {"ttft": first - started, "rate": (tokens - 1) / (last - first), "tokens": tokens, "error": None}


def concurrent(base: str, token: str | None, clients: int, max_tokens: int) -> dict:
    results: list[dict] = []
    lock = threading.Lock()

    def one() -> None:
        r = stream_once(base, token, max_tokens)
        with lock:
            results.append(r)

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"results": results, "wall": wall, "aggregate": sum(r["tokens"] for r in results) / wall}


def decode_ceiling(model: Path) -> tuple[float, float]:
    """Median llama_decode time of one step with 1 and with 4 sequences (one token each): the most
    that batching can gain on this machine, whatever the scheduler does."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=256, n_threads=THREADS, verbose=False)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 4096, 512, 512, 4
    params.kv_unified = False
    params.n_threads = params.n_threads_batch = THREADS
    ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def step(tokens: list[tuple[int, int]]) -> float:
        batch.n_tokens = 0
        for i, (position, seq) in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = 200, position, 1, True
            batch.seq_id[i][0] = seq
            batch.n_tokens = i + 1
        started = time.perf_counter()
        llama_cpp.llama_decode(ctx, batch)
        return time.perf_counter() - started

    for seq in range(4):
        step([(p, seq) for p in range(100)])
    medians = []
    for n in (1, 4):
        medians.append(statistics.median(step([(100 + k, seq) for seq in range(n)]) for k in range(40)))
        for seq in range(4):
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), seq, 100, -1)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    return medians[0], medians[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--model", type=Path, help="A GGUF file to serve instead of the bundled model.")
    args = parser.parse_args()
    model = args.model or bundled_model_path()
    home = tempfile.mkdtemp(prefix="lantern-bench-")
    env = {**os.environ, "LANTERN_HOME": home}
    subprocess.run([str(LANTERN), "models", "add", str(model), "--name", "served"], env=env, check=True)
    token = json.loads(
        subprocess.run(
            [str(LANTERN), "pair", "bench", "--json"], env=env, capture_output=True, check=True
        ).stdout
    )["token"]
    lantern_port, llama_port = free_port(), free_port()
    servers = [
        subprocess.Popen(
            [str(LANTERN), "serve", "--port", str(lantern_port), "--slots", "4", "--model", "served"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--n_threads",
                str(THREADS),
                "--n_ctx",
                "4096",
                "--host",
                "127.0.0.1",
                "--port",
                str(llama_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    lantern_url, llama_url = f"http://127.0.0.1:{lantern_port}", f"http://127.0.0.1:{llama_port}"
    try:
        wait_healthy(lantern_url + "/v1/lantern/health")
        wait_healthy(llama_url + "/v1/models")
        import llama_cpp

        llm = llama_cpp.Llama(
            model_path=str(model), n_ctx=4096, n_threads=THREADS, n_threads_batch=THREADS, verbose=False
        )
        # Warm every path once.
        stream_once(lantern_url, token, 8)
        stream_once(llama_url, None, 8)
        raw_once(llm, 8)

        single = {"lantern": [], "raw": [], "llama_cpp.server": []}
        for round_ in range(args.rounds):
            order = ["lantern", "raw", "llama_cpp.server"]
            for name in order[round_ % 3 :] + order[: round_ % 3]:
                if name == "lantern":
                    single[name].append(stream_once(lantern_url, token, args.tokens))
                elif name == "raw":
                    single[name].append(raw_once(llm, args.tokens))
                else:
                    single[name].append(stream_once(llama_url, None, args.tokens))
        del llm

        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"model {model.name}, {THREADS} threads, {args.tokens} tokens, greedy, {args.rounds} rounds"
        )
        print("\n## single stream")
        print("| path | decode tok/s (median) | TTFT ms (median) | runs tok/s |")
        print("|---|---|---|---|")
        medians = {}
        for name, runs in single.items():
            ok = [r for r in runs if not r["error"]]
            medians[name] = statistics.median(r["rate"] for r in ok)
            print(
                f"| {name} | {medians[name]:.1f} | {statistics.median(r['ttft'] for r in ok) * 1000:.1f} | "
                + ", ".join(f"{r['rate']:.1f}" for r in ok)
                + " |"
            )
        print(
            f"Lantern API / raw llama-cpp-python: {medians['lantern'] / medians['raw']:.3f} (target >= 0.95)"
        )
        print(
            f"Lantern API / llama_cpp.server:     {medians['lantern'] / medians['llama_cpp.server']:.3f} "
            "(target >= 1.0)"
        )

        print("\n## concurrency")
        print("| server | clients | TTFT p50 ms | TTFT p95 ms | aggregate tok/s | failed |")
        print("|---|---|---|---|---|---|")
        aggregates = {}
        for name, url, key in (("lantern", lantern_url, token), ("llama_cpp.server", llama_url, None)):
            for clients in (1, 4):
                ttfts, failed, rates = [], 0, []
                for _ in range(args.rounds):
                    run = concurrent(url, key, clients, args.tokens)
                    rates.append(run["aggregate"])
                    for r in run["results"]:
                        if r["error"]:
                            failed += 1
                        else:
                            ttfts.append(r["ttft"] * 1000)
                aggregates[(name, clients)] = statistics.median(rates)
                p50 = f"{pct(ttfts, 0.5):.0f}" if ttfts else "-"
                p95 = f"{pct(ttfts, 0.95):.0f}" if ttfts else "-"
                print(
                    f"| {name} | {clients} | {p50} | {p95} | {aggregates[(name, clients)]:.1f} | "
                    f"{failed} of {clients * args.rounds} |"
                )
        ratio = aggregates[("lantern", 4)] / aggregates[("lantern", 1)]
        print(f"Lantern aggregate at 4 clients / 1 client: {ratio:.2f} (target >= 2)")
        one, four = decode_ceiling(model)
        print(
            f"llama_decode alone: {one * 1000:.1f} ms for 1 sequence, {four * 1000:.1f} ms for 4 in a batch; "
            f"the most batching can gain here is {4 * one / four:.2f}x"
        )
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)


if __name__ == "__main__":
    main()
