"""Lantern's HTTP API against llama-cpp-python's own server (and raw llama-cpp-python), side by side.

Same model (the bundled SmolLM2), same threads, greedy, streamed, every request through the
official ``openai`` client; ``llama_cpp.server`` runs with n_ctx 4096 and its defaults otherwise,
except that in phones and gap a new request waits for the running one (--interrupt_requests
False) instead of cutting it off. Lantern runs from this checkout with its default config (but
the threads). Sections (``--only`` picks some, in this order):

chat         an 8-turn phone chat: turn 1 pastes a ~450-token note (a pydoc topic) and asks about
             it, each later turn resends the whole history and a short question; 64-token
             answers, a fresh server per round (turn 1 cold). TTFT per turn on both servers and
             Lantern's cached_tokens. Goals: Lantern's turns 2-8 median <= 0.15 x its turn 1, and
             <= llama_cpp.server's turns 2-8 median.
phones       4 phones at once, each its own 6-turn chat (different notes), on Lantern --slots 4,
             Lantern --slots 2 (conversations saved and restored) and llama_cpp.server: TTFT
             p50/p95 per turn, aggregate completion tokens/s, failures, cached / prompt tokens of
             turns 2-6.
gap          one client streams a 300-token answer; after its 20th token another sends a
             ~1,800-token prompt (16 tokens out). The streaming client's normal gap between
             tokens and its longest gap while the long prompt is prefilled; the long prompt's
             TTFT. Goal (Lantern, token_gap_ms auto): longest <= 2 x normal.
speculative  Lantern --speculative prompt-lookup vs off on answers from memory (pydoc notes added
             with `lantern memory add`, the labelled questions) and on free chat: decode tokens/s,
             acceptance, identical answers. The default is chosen on the tuning prompts only
             (prompt-lookup must be >= 5% faster there); the reporting prompts give the figures.
throughput   single-stream decode tokens/s (Lantern vs raw `Llama.create_chat_completion` vs
             llama_cpp.server), TTFT p50/p95 and aggregate tokens/s at 1 and 4 clients, and the
             aggregate's gain at 4 clients against llama_decode's batch ceiling measured here.

Run: .venv/bin/python bench/bench_api.py [--rounds 3] [--tokens 128] [--answer-tokens 64]
         [--threads N] [--only chat,phones,gap,speculative,throughput]
(needs the bench extra: make bench installs it). Prints markdown tables for RESULTS.md on
stdout, progress on stderr. On a quiet machine only: two servers' threads on busy cores slow
llama.cpp down by orders of magnitude, and unevenly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from api_workloads import (  # noqa: E402
    FREE_CHAT_REPORTING,
    FREE_CHAT_TUNING,
    STORY,
    SYSTEM,
    Endpoint,
    Reply,
    converse,
    memory_questions,
    pydoc_prose,
    stream_chat,
    write_pydoc_notes,
)

from app.bundled import bundled_model_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The CLI of this checkout (not whatever `lantern` the venv's entry point imports).
LANTERN = [sys.executable, "-c", "from app.cli import main; main()"]
THREADS = os.cpu_count() or 1

CHAT_TURNS, PHONE_TURNS, PHONES, NOTE_TOKENS = 8, 6, 4, 450
GAP_STREAM_TOKENS, GAP_AFTER_CHUNKS, GAP_PROMPT_TOKENS, GAP_PROMPT_MAX_TOKENS = 300, 20, 1800, 16
SPECULATIVE_PROMPTS = 6  # per set (tuning, reporting) and kind (memory, free chat)
# Where each section's notes start among the long pydoc topics: different texts per section.
CHAT_NOTES, PHONE_NOTES, GAP_PROMPTS = 0, 8, 20


@dataclass
class Bench:
    model: Path
    home: Path
    token: str
    rounds: int
    tokens: int
    answer_tokens: int
    threads: int
    count_tokens: Callable[[str], int]

    @property
    def env(self) -> dict:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "LANTERN_HOME": str(self.home), "PYTHONPATH": path}

    def note(self, index: int, tokens: int = NOTE_TOKENS) -> str:
        return pydoc_prose(self.count_tokens, index, tokens)


# --- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code in (200, 401):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} never came up")


@contextlib.contextmanager
def running(name: str, command: list[str], health: str, log: Path, env: dict | None = None) -> Iterator[None]:
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=out)
        try:
            wait_healthy(health, process)
            yield
        except BaseException:
            print(f"({name}: server log in {log})", file=sys.stderr)
            raise
        finally:
            process.terminate()
            process.wait(timeout=60)


@contextlib.contextmanager
def lantern_server(bench: Bench, slots: int = 4, speculative: str | None = None) -> Iterator[Endpoint]:
    """A fresh `lantern serve` of this checkout with no saved conversation states (a cold start)."""
    shutil.rmtree(bench.home / "kv-states", ignore_errors=True)
    port = free_port()
    command = [*LANTERN, "serve", "--port", str(port), "--slots", str(slots), "--model", "served"]
    name = f"Lantern --slots {slots}"
    if speculative:
        command += ["--speculative", speculative]
        name += f" --speculative {speculative}"
    url = f"http://127.0.0.1:{port}"
    progress(f"starting {name}")
    with running(name, command, url + "/v1/lantern/health", bench.home / "lantern-serve.log", bench.env):
        yield warmed(Endpoint(name, url, bench.token))


@contextlib.contextmanager
def llama_server(bench: Bench, interrupt: bool = True) -> Iterator[Endpoint]:
    """``interrupt=False``: a new request waits for the running one (by default it cuts it off)."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(bench.model)]
    command += [
        "--n_threads",
        str(bench.threads),
        "--n_ctx",
        "4096",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    command += ["--interrupt_requests", str(interrupt)]
    url = f"http://127.0.0.1:{port}"
    progress("starting llama_cpp.server")
    with running("llama_cpp.server", command, url + "/v1/models", bench.home / "llama-server.log"):
        yield warmed(Endpoint("llama_cpp.server", url))


def warmed(endpoint: Endpoint) -> Endpoint:
    """One tiny request first (no system message, so it shares next to nothing with the chats)."""
    stream_chat(endpoint, [{"role": "user", "content": "Say hello."}], 4)
    return endpoint


STARTED = time.monotonic()


def progress(message: str) -> None:
    """Where a long run is, on stderr (the tables go to stdout)."""
    print(f"[{time.monotonic() - STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


def lantern_cli(bench: Bench, *args: str) -> str:
    done = subprocess.run([*LANTERN, *args], env=bench.env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"lantern {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


# --- figures ------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def table(header: list[str], rows: list[list]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def failures(replies: list[Reply]) -> str:
    failed = [r for r in replies if not r.ok]
    text = f"{len(failed)} of {len(replies)}"
    return text + (f" (first: {failed[0].error[:120]})" if failed else "")


# --- 1. the 8-turn phone chat ------------------------------------------------------------------


def section_chat(bench: Bench) -> None:
    runs: dict[str, list[list[Reply]]] = {"Lantern": [], "llama_cpp.server": []}
    notes = [bench.note(CHAT_NOTES + round_) for round_ in range(bench.rounds)]
    for note in notes:
        with lantern_server(bench) as endpoint:
            runs["Lantern"].append(converse(endpoint, note, CHAT_TURNS, bench.answer_tokens))
        with llama_server(bench) as endpoint:
            runs["llama_cpp.server"].append(converse(endpoint, note, CHAT_TURNS, bench.answer_tokens))

    def ttfts(name: str, turns: range) -> list[float]:
        return [chat[t].ttft for chat in runs[name] for t in turns if chat[t].ok]

    print(f"\n## 8-turn phone chat ({bench.rounds} rounds, median TTFT; a fresh server per round)")
    print(f"Turn 1: a pydoc note and a question; answers of at most {bench.answer_tokens} tokens.")
    print(f"Notes: {', '.join(str(bench.count_tokens(n)) for n in notes)} tokens (one per round).")
    print("Lantern's cached / prompt tokens per round; in brackets the prompt + answer tokens of the")
    print("turn before (its last answer token is never evaluated, so that - 1 is full reuse).\n")
    rows = []
    for t in range(CHAT_TURNS):
        reuse = "; ".join(reuse_cell(chat, t) for chat in runs["Lantern"])
        rows.append(
            [
                t + 1,
                ms(median_or_none(ttfts("Lantern", range(t, t + 1)))),
                ms(median_or_none(ttfts("llama_cpp.server", range(t, t + 1)))),
                reuse,
            ]
        )
    table(["turn", "Lantern TTFT ms", "llama_cpp.server TTFT ms", "Lantern cached / prompt (held)"], rows)
    first = median_or_none(ttfts("Lantern", range(1)))
    later = median_or_none(ttfts("Lantern", range(1, CHAT_TURNS)))
    llama_later = median_or_none(ttfts("llama_cpp.server", range(1, CHAT_TURNS)))
    print()
    for name in runs:
        print(f"- {name}: failed turns {failures([r for chat in runs[name] for r in chat])}")
    if first and later and llama_later:
        print(
            f"- Lantern turns 2-8 / turn 1: {later / first:.3f} (goal <= 0.15): "
            f"{verdict(later <= 0.15 * first)}"
        )
        print(
            f"- Lantern turns 2-8 {ms(later)} ms vs llama_cpp.server's {ms(llama_later)} ms "
            f"(goal Lantern <= llama_cpp.server): {verdict(later <= llama_later)}"
        )


def reuse_cell(chat: list[Reply], turn: int) -> str:
    reply = chat[turn]
    if not reply.ok or reply.usage is None:
        return "failed"
    cell = f"{reply.cached_tokens} / {reply.prompt_tokens}"
    before = chat[turn - 1] if turn else None
    if before is not None and before.ok and before.usage is not None:
        cell += f" ({before.prompt_tokens + before.completion_tokens})"
    return cell


# --- 2. four phones at once --------------------------------------------------------------------


def section_phones(bench: Bench) -> None:
    servers = [
        lambda: lantern_server(bench, slots=4),
        lambda: lantern_server(bench, slots=2),
        lambda: llama_server(bench, interrupt=False),
    ]
    results = []  # (name, chats, wall seconds)
    for serve in servers:
        with serve() as endpoint:
            chats, wall = [], 0.0
            for round_ in range(bench.rounds):
                notes = [bench.note(PHONE_NOTES + PHONES * round_ + k) for k in range(PHONES)]
                round_chats, round_wall = phones_at_once(endpoint, notes, bench.answer_tokens)
                chats += round_chats
                wall += round_wall
            results.append((endpoint.name, chats, wall))

    print(f"\n## {PHONES} phones at once ({PHONE_TURNS} turns each, {bench.rounds} rounds)")
    print("TTFT p50 / p95 ms per turn over all phones and rounds.\n")
    rows = []
    for t in range(PHONE_TURNS):
        row = [t + 1]
        for _, chats, _ in results:
            values = [chat[t].ttft for chat in chats if chat[t].ok]
            row.append(f"{ms(pct(values, 0.5))} / {ms(pct(values, 0.95))}" if values else "-")
        rows.append(row)
    table(["turn", *(name for name, _, _ in results)], rows)
    print()
    rows = []
    for name, chats, wall in results:
        replies = [r for chat in chats for r in chat]
        later = [r for chat in chats for r in chat[1:] if r.ok and r.usage is not None]
        cached = sum(r.cached_tokens for r in later)
        prompt = sum(r.prompt_tokens for r in later)
        reuse = f"{cached} / {prompt} ({cached / prompt:.0%})" if prompt else "-"
        tokens = sum(r.completion_tokens for r in replies if r.ok)
        rows.append([name, f"{tokens / wall:.1f}", failures(replies), reuse])
    table(["server", "aggregate completion tok/s", "failed turns", "turns 2+: cached / prompt tokens"], rows)


def phones_at_once(
    endpoint: Endpoint, notes: list[str], answer_tokens: int
) -> tuple[list[list[Reply]], float]:
    chats: list[list[Reply]] = [[] for _ in notes]

    def phone(k: int) -> None:
        chats[k] = converse(endpoint, notes[k], PHONE_TURNS, answer_tokens)

    started = time.perf_counter()
    threads = [threading.Thread(target=phone, args=(k,)) for k in range(len(notes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return chats, time.perf_counter() - started


# --- 3. the longest gap while a long prompt is admitted ----------------------------------------


def section_gap(bench: Bench) -> None:
    results = []  # (name, [figures per round])
    for serve in (lambda: lantern_server(bench), lambda: llama_server(bench, interrupt=False)):
        with serve() as endpoint:
            figures = []
            for round_ in range(bench.rounds):
                prompt = bench.note(GAP_PROMPTS + 3 * round_, GAP_PROMPT_TOKENS)
                figures.append(gap_round(endpoint, prompt))
            results.append((endpoint.name, figures))

    print(f"\n## Longest gap while a long prompt is admitted ({bench.rounds} rounds)")
    print(
        f"A streams {GAP_STREAM_TOKENS} tokens; after its {GAP_AFTER_CHUNKS}th, B sends a "
        f"{GAP_PROMPT_TOKENS}-token pydoc text ({GAP_PROMPT_MAX_TOKENS} tokens out). Normal gap: A's "
        "median before B; longest: A's longest gap from B's submission to B's first token.\n"
    )
    rows = []
    for name, figures in results:
        for k, f in enumerate(figures):
            rows.append([name, k + 1, *gap_cells(f)])
    table(
        [
            "server",
            "round",
            "normal gap ms",
            "longest gap ms",
            "longest / normal",
            "B TTFT ms",
            "B prompt tokens",
            "A tokens during B's prefill",
        ],
        rows,
    )
    print()
    for name, figures in results:
        ratios = [f["longest"] / f["normal"] for f in figures if f.get("longest") and f.get("normal")]
        if ratios:
            print(
                f"- {name}: longest / normal median {statistics.median(ratios):.2f}, worst {max(ratios):.2f} "
                f"(goal <= 2): {verdict(max(ratios) <= 2)}, within it in {sum(r <= 2 for r in ratios)} "
                f"of {len(figures)} rounds"
            )
        else:
            print(f"- {name}: no gap measured (see the table)")


def gap_round(endpoint: Endpoint, long_prompt: str) -> dict:
    reached = threading.Event()
    streaming: dict[str, Reply] = {}

    def stream_a() -> None:
        on_chunk = lambda n: reached.set() if n >= GAP_AFTER_CHUNKS else None  # noqa: E731
        streaming["a"] = stream_chat(endpoint, STORY, GAP_STREAM_TOKENS, on_chunk=on_chunk)
        reached.set()  # also when it ended (or failed) before its 20th token

    thread = threading.Thread(target=stream_a)
    thread.start()
    reached.wait()
    b = stream_chat(endpoint, [SYSTEM, {"role": "user", "content": long_prompt}], GAP_PROMPT_MAX_TOKENS)
    thread.join()
    return gap_figures(streaming["a"], b)


def gap_figures(a: Reply, b: Reply) -> dict:
    figures = {"a": a, "b": b}
    if not a.ok or not b.ok:
        return figures
    submitted, admitted = b.started, b.first_token_at
    pairs = list(zip(a.times, a.times[1:], strict=False))
    before = [t2 - t1 for t1, t2 in pairs[1:] if t2 <= submitted]  # the first gap is a warm-up
    during = [t2 - t1 for t1, t2 in pairs if t2 > submitted and t1 < admitted]
    figures["normal"] = median_or_none(before)
    figures["longest"] = max(during) if during else None
    figures["a_during"] = sum(submitted < t < admitted for t in a.times)
    figures["a_covered"] = a.times[-1] >= admitted  # A still streamed when B's prefill ended
    return figures


def gap_cells(f: dict) -> list[str]:
    a, b = f["a"], f["b"]
    if not a.ok or not b.ok:
        return ["-", "-", "-", "-", "-", f"failed: A {a.error or 'ok'}, B {b.error or 'ok'}"]
    normal, longest = f["normal"], f["longest"]
    ratio = f"{longest / normal:.2f}" if normal and longest else "-"
    during = str(f["a_during"])
    if not f["a_covered"]:
        during += f" (A ended after {a.completion_tokens} tokens, before B's first)"
    prompt = b.prompt_tokens if b.prompt_tokens is not None else "-"
    return [ms(normal), ms(longest), ratio, ms(b.ttft), prompt, during]


# --- 4. speculative decoding -------------------------------------------------------------------


MODES = ("off", "prompt-lookup")


def speculative_prompts() -> dict[str, list[tuple[str, str]]]:
    """(kind, prompt) per set: the tuning prompts choose the default, the reporting ones are
    the figures (pydoc questions of the dev and test splits, two disjoint free-chat lists)."""
    n = SPECULATIVE_PROMPTS
    return {
        "tuning": [("memory", q["question"]) for q in memory_questions("dev", n)]
        + [("chat", p) for p in FREE_CHAT_TUNING[:n]],
        "reporting": [("memory", q["question"]) for q in memory_questions("test", n)]
        + [("chat", p) for p in FREE_CHAT_REPORTING[:n]],
    }


def section_speculative(bench: Bench) -> None:
    prompts = speculative_prompts()
    notes = bench.home.parent / "speculative-notes"
    files = write_pydoc_notes(
        notes, memory_questions("dev", SPECULATIVE_PROMPTS) + memory_questions("test", SPECULATIVE_PROMPTS)
    )
    lantern_cli(bench, "memory", "add", str(notes))
    # replies[mode][set] -> one list of replies per round, in the order of prompts[set]
    replies = {mode: {name: [] for name in prompts} for mode in MODES}
    for round_ in range(bench.rounds):
        for mode in MODES if round_ % 2 == 0 else MODES[::-1]:  # alternate which goes first
            with lantern_server(bench, speculative=mode) as endpoint:
                for name, items in prompts.items():
                    replies[mode][name].append(
                        [
                            stream_chat(
                                endpoint,
                                [{"role": "user", "content": p}],
                                bench.tokens,
                                memory=kind == "memory",
                            )
                            for kind, p in items
                        ]
                    )

    print(f"\n## Speculative decoding: --speculative prompt-lookup vs off ({bench.rounds} rounds)")
    print(
        f"{SPECULATIVE_PROMPTS} memory questions ({files} pydoc topics as notes) and "
        f"{SPECULATIVE_PROMPTS} free-chat prompts per set; {bench.tokens} tokens, greedy; "
        "decode tok/s = sum(tokens - 1) / sum(decode time).\n"
    )
    rows, gains = [], {}
    for name, items in prompts.items():
        for kind in ("memory", "chat", "all"):
            picked = [i for i, (k, _) in enumerate(items) if kind in (k, "all")]
            row, gains[(name, kind)] = speculative_row(replies, name, picked)
            rows.append([name, kind, *row])
    table(
        [
            "set",
            "kind",
            "prompts",
            "off tok/s",
            "prompt-lookup tok/s",
            "gain",
            "acceptance",
            "same answers",
            "failed",
        ],
        rows,
    )
    gain = gains[("tuning", "all")]
    print()
    if gain is None:
        print("- No verdict: requests failed.")
        return
    choice = "prompt-lookup wins" if gain >= 1.05 else "off stays (no gain of >= 5%)"
    print(
        f"- Tuning set: prompt-lookup / off = {gain:.3f}: **{choice}**; reported figures: the reporting set."
    )
    spread = round_spread(replies["off"]["tuning"])
    if spread is not None:
        print(f"- Run-to-run spread of off's tuning-set tok/s over rounds: {spread:.1%}.")


def decode_rate(replies: list[Reply]) -> float | None:
    ok = [r for r in replies if r.ok and r.decode_s > 0]
    seconds = sum(r.decode_s for r in ok)
    return sum(r.completion_tokens - 1 for r in ok) / seconds if seconds else None


def speculative_row(replies: dict, name: str, picked: list[int]) -> tuple[list[str], float | None]:
    chosen = {mode: [round_[i] for round_ in replies[mode][name] for i in picked] for mode in MODES}
    off, on = decode_rate(chosen["off"]), decode_rate(chosen["prompt-lookup"])
    accepted = sum(r.drafts[0] for r in chosen["prompt-lookup"])
    rejected = sum(r.drafts[1] for r in chosen["prompt-lookup"])
    acceptance = (
        f"{accepted / (accepted + rejected):.2f} ({accepted} / {accepted + rejected})"
        if accepted + rejected
        else "-"
    )
    pairs = list(zip(chosen["off"], chosen["prompt-lookup"], strict=True))
    same = sum(a.ok and b.ok and a.text == b.text for a, b in pairs)
    gain = on / off if on and off else None
    failed = sum(not r.ok for mode in MODES for r in chosen[mode])
    cells = [
        f"{off:.1f}" if off else "-",
        f"{on:.1f}" if on else "-",
        f"{gain:.3f}" if gain else "-",
        acceptance,
        f"{same} of {len(pairs)}",
        str(failed),
    ]
    return [str(len(picked)), *cells], gain


def round_spread(rounds: list[list[Reply]]) -> float | None:
    rates = [rate for rate in map(decode_rate, rounds) if rate]
    return max(rates) / min(rates) - 1 if len(rates) > 1 else None


# --- 5. throughput: one stream, 1 and 4 clients, the batch ceiling -----------------------------


def raw_once(llm, max_tokens: int) -> Reply:
    """The same story through llama-cpp-python in this process, no server."""
    llm.reset()
    reply = Reply(started=time.perf_counter())
    for chunk in llm.create_chat_completion(STORY, max_tokens=max_tokens, temperature=0, stream=True):
        content = chunk["choices"][0]["delta"].get("content")
        if content:
            reply.times.append(time.perf_counter())
            reply.pieces.append(content)
    return reply


def concurrent(endpoint: Endpoint, clients: int, max_tokens: int) -> tuple[list[Reply], float]:
    """``clients`` simultaneous story requests; the replies and the aggregate tokens/s."""
    replies: list[Reply] = []
    lock = threading.Lock()

    def one() -> None:
        reply = stream_chat(endpoint, STORY, max_tokens)
        with lock:
            replies.append(reply)

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return replies, sum(r.completion_tokens for r in replies if r.ok) / wall


def decode_ceiling(model: Path, threads: int = THREADS) -> tuple[float, float]:
    """Median llama_decode time of one step with 1 and with 4 sequences (one token each): the most
    that batching can gain on this machine, whatever the scheduler does."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=256, n_threads=threads, verbose=False)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 4096, 512, 512, 4
    params.kv_unified = False
    params.n_threads = params.n_threads_batch = threads
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


def section_throughput(bench: Bench) -> None:
    import llama_cpp

    with lantern_server(bench) as lantern, llama_server(bench) as llama:
        llm = llama_cpp.Llama(
            model_path=str(bench.model),
            n_ctx=4096,
            n_threads=bench.threads,
            n_threads_batch=bench.threads,
            verbose=False,
        )
        paths = {
            "lantern": lambda tokens: stream_chat(lantern, STORY, tokens),
            "raw": lambda tokens: raw_once(llm, tokens),
            "llama_cpp.server": lambda tokens: stream_chat(llama, STORY, tokens),
        }
        for run in paths.values():
            run(8)  # each path has seen the story once, as in earlier runs of this section
        single: dict[str, list[Reply]] = {name: [] for name in paths}
        order = list(paths)
        for round_ in range(bench.rounds):
            for name in order[round_ % 3 :] + order[: round_ % 3]:
                single[name].append(paths[name](bench.tokens))
        llm.close()
        clients = {
            (e.name, n): [concurrent(e, n, bench.tokens) for _ in range(bench.rounds)]
            for e in (lantern, llama)
            for n in (1, 4)
        }
    one, four = decode_ceiling(bench.model, bench.threads)

    print(f"\n## Throughput: one stream, 1 and 4 clients ({bench.tokens} tokens, {bench.rounds} rounds)\n")
    rows, medians = [], {}
    for name, runs in single.items():
        ok = [r for r in runs if r.ok]
        medians[name] = statistics.median(r.rate for r in ok)
        rates = ", ".join(f"{r.rate:.1f}" for r in ok)
        rows.append([name, f"{medians[name]:.1f}", ms(statistics.median(r.ttft for r in ok)), rates])
    table(["path", "decode tok/s (median)", "TTFT ms (median)", "runs tok/s"], rows)
    print(
        f"\n- Lantern API / raw llama-cpp-python: {medians['lantern'] / medians['raw']:.3f} (target >= 0.95)"
    )
    print(
        f"- Lantern API / llama_cpp.server: {medians['lantern'] / medians['llama_cpp.server']:.3f} "
        "(target >= 1.0)\n"
    )
    rows, aggregates = [], {}
    for (name, n), runs in clients.items():
        replies = [r for run, _ in runs for r in run]
        ttfts = [r.ttft for r in replies if r.ok]
        aggregates[(name, n)] = statistics.median(rate for _, rate in runs)
        p50, p95 = (ms(pct(ttfts, 0.5)), ms(pct(ttfts, 0.95))) if ttfts else ("-", "-")
        rows.append([name, n, p50, p95, f"{aggregates[(name, n)]:.1f}", failures(replies)])
    table(["server", "clients", "TTFT p50 ms", "TTFT p95 ms", "aggregate tok/s", "failed"], rows)
    gain = aggregates[(lantern.name, 4)] / aggregates[(lantern.name, 1)]
    ceiling = 4 * one / four
    print(
        f"\n- llama_decode alone: {one * 1000:.1f} ms for 1 sequence, {four * 1000:.1f} ms for 4 in a batch: "
        f"ceiling 4 x t1 / t4 = {ceiling:.2f}x"
    )
    print(
        f"- Lantern aggregate 4 clients / 1 client: {gain:.2f}x = {gain / ceiling:.0%} of the ceiling "
        f"(goal >= 95%): {verdict(gain >= 0.95 * ceiling)}"
    )


# --- the run -----------------------------------------------------------------------------------


def machine_line(bench: Bench) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"model {bench.model.name}, {bench.threads} threads; "
        f"commit {commit}{' (uncommitted changes)' if dirty.strip() else ''}; "
        f"date {time.strftime('%Y-%m-%d')}; rounds {bench.rounds}, tokens {bench.tokens}, "
        f"answer tokens {bench.answer_tokens}"
    )


def set_up(args: argparse.Namespace) -> Bench:
    import llama_cpp

    model = args.model or bundled_model_path()
    home = Path(tempfile.mkdtemp(prefix="lantern-bench-")) / "home"
    vocab = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    bench = Bench(
        model=model,
        home=home,
        token="",
        rounds=args.rounds,
        tokens=args.tokens,
        answer_tokens=args.answer_tokens,
        threads=args.threads,
        count_tokens=lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)),
    )
    lantern_cli(bench, "models", "add", str(model), "--name", "served")
    config = bench.home / "config.toml"  # written by the first command, every key at its default
    text, found = re.subn(r"(?m)^threads = \d+", f"threads = {bench.threads}", config.read_text())
    if found != 1:
        raise RuntimeError(f"no runtime threads key to set in {config}")
    config.write_text(text)
    bench.token = json.loads(lantern_cli(bench, "pair", "bench", "--json"))["token"]
    return bench


RUNS = {
    "chat": section_chat,
    "phones": section_phones,
    "gap": section_gap,
    "speculative": section_speculative,
    "throughput": section_throughput,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128, help="Answer tokens (throughput, speculative).")
    parser.add_argument(
        "--answer-tokens", type=int, default=64, help="Answer tokens per chat turn (chat, phones)."
    )
    parser.add_argument(
        "--threads", type=int, default=THREADS, help="Threads of every server (default: cores)."
    )
    parser.add_argument("--model", type=Path, help="A GGUF file to serve instead of the bundled model.")
    parser.add_argument(
        "--only", default=",".join(RUNS), help=f"Comma-separated sections of {', '.join(RUNS)}."
    )
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(RUNS)
    if unknown:
        parser.error(f"unknown sections {', '.join(sorted(unknown))}; choose from {', '.join(RUNS)}")
    bench = set_up(args)
    print(machine_line(bench), flush=True)
    for name, section in RUNS.items():
        if name in chosen:
            section(bench)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
