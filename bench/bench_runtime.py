"""Lantern's chat runtime against raw llama-cpp-python, side by side in one process.

1. Streaming: decode tokens/s and time to first token of the `lantern ask` path
   (Assistant.ask -> Engine.stream_chat) versus `Llama.create_completion(stream=True)` on the
   same Llama object, the same rendered prompt, the same threads, greedy decoding, each run
   starting from an empty KV cache, alternating which goes first.
2. Second turn: time to first token of a conversation's second turn with the KV cache of the
   first turn reused, versus the same turn evaluated cold.

Run: .venv/bin/python bench/bench_runtime.py [--rounds N] [--tokens N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.assistant import Assistant  # noqa: E402
from app.chat_template import ChatMessage  # noqa: E402
from app.engine import GenerationSettings  # noqa: E402

STREAM_PROMPT = "Write a long poem about the sea, with many verses."
# A pasted note and a question about it: the history that a second turn reuses.
NOTE = (
    "Meeting notes, Tuesday. The lighthouse restoration committee met at the harbour office. "
    "Anna reported that the lens was shipped to the workshop in Brest and should be back by "
    "March. The paint for the tower costs more than planned because the old lead paint must be "
    "removed first by a certified team. Tom will ask the council for a second grant. The visitor "
    "centre needs new signs in three languages, and the ferry company offered to print them. "
    "We agreed to open the tower to the public on the first Sunday of each month from May, with "
    "volunteers at the door, and to keep the logbook of the last keeper on display. "
) * 3


def _stream_lantern(assistant: Assistant, max_tokens: int) -> tuple[float, int, float, str]:
    engine = assistant.engine()
    engine.forget_cache()
    settings = GenerationSettings(max_tokens=max_tokens, temperature=0.0)
    started = time.perf_counter()
    first = last = None
    turn = assistant.ask(STREAM_PROMPT, settings=settings)
    pieces = []
    for piece in turn:
        now = time.perf_counter()
        first = first or now
        last = now
        pieces.append(piece)
    result = turn.result
    return first - started, result.completion_tokens, last - first, "".join(pieces)


def _stream_raw(assistant: Assistant, max_tokens: int) -> tuple[float, int, float, str]:
    engine = assistant.engine()
    llm = engine.llm
    llm.reset()
    system = assistant.config.system_prompt
    prompt = engine.template.render([ChatMessage("system", system), ChatMessage("user", STREAM_PROMPT)])
    prompt_tokens = len(llm.tokenize(prompt.encode(), add_bos=True, special=True))
    started = time.perf_counter()
    first = last = None
    pieces = []
    for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True):
        now = time.perf_counter()
        first = first or now
        last = now
        pieces.append(chunk["choices"][0]["text"])
    # Generation ran to max_tokens; the last sampled token is never evaluated.
    completion = llm.n_tokens - prompt_tokens + 1
    return first - started, completion, last - first, "".join(pieces)


def bench_streaming(assistant: Assistant, rounds: int, max_tokens: int) -> dict:
    runs = {"lantern": [], "raw": []}
    texts = {}
    _stream_raw(assistant, 16)  # warm-up: page in the weights, build the pieces cache
    _stream_lantern(assistant, 16)
    for i in range(rounds):
        order = ("lantern", "raw") if i % 2 == 0 else ("raw", "lantern")
        for name in order:
            fn = _stream_lantern if name == "lantern" else _stream_raw
            ttft, completion, decode_s, text = fn(assistant, max_tokens)
            runs[name].append((ttft, (completion - 1) / decode_s, completion))
            texts[name] = text
    summary = {}
    for name, values in runs.items():
        summary[name] = {
            "ttft_ms": statistics.median(v[0] for v in values) * 1000,
            "decode_tps": statistics.median(v[1] for v in values),
            "tokens": values[0][2],
        }
    summary["same_text"] = texts["lantern"] == texts["raw"]
    summary["decode_ratio"] = summary["lantern"]["decode_tps"] / summary["raw"]["decode_tps"]
    summary["ttft_ratio"] = summary["lantern"]["ttft_ms"] / summary["raw"]["ttft_ms"]
    return summary


def bench_second_turn(assistant: Assistant, rounds: int) -> dict:
    engine = assistant.engine()
    settings = GenerationSettings(max_tokens=48, temperature=0.0)
    history = [
        ChatMessage("system", assistant.config.system_prompt),
        ChatMessage("user", NOTE + "\nSummarise these notes in two sentences."),
    ]
    engine.forget_cache()
    first = engine.chat(history, settings)
    second = [
        *history,
        ChatMessage("assistant", first.text),
        ChatMessage("user", "Who asks the council for money?"),
    ]
    warm, cold, evaluated = [], [], {}
    for i in range(rounds):
        for mode in ("warm", "cold") if i % 2 == 0 else ("cold", "warm"):
            engine.forget_cache()
            if mode == "warm":
                engine.chat(history, settings)  # turn one, as in a live chat
            result = engine.chat(second, settings)
            (warm if mode == "warm" else cold).append(result.time_to_first_token_s)
            evaluated[mode] = (result.prompt_tokens_evaluated, result.prompt_tokens)
    return {
        "warm_ms": statistics.median(warm) * 1000,
        "cold_ms": statistics.median(cold) * 1000,
        "ratio": statistics.median(warm) / statistics.median(cold),
        "evaluated": evaluated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        assistant = Assistant(Path(home))
        engine = assistant.engine()
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
        print(f"model: {engine.model_path.name}, threads {engine.threads}, ctx {engine.context_length}")
        s = bench_streaming(assistant, args.rounds, args.tokens)
        print(f"\n## Streaming, {args.rounds} alternating rounds, {s['lantern']['tokens']} tokens, greedy")
        print("| path | TTFT ms (median) | decode tok/s (median) |")
        print("|---|---|---|")
        for name in ("lantern", "raw"):
            print(f"| {name} | {s[name]['ttft_ms']:.1f} | {s[name]['decode_tps']:.1f} |")
        print(f"decode ratio lantern/raw: {s['decode_ratio']:.3f}  (target >= 0.97)")
        print(f"TTFT ratio lantern/raw: {s['ttft_ratio']:.3f}")
        print(f"identical text: {s['same_text']}")
        t = bench_second_turn(assistant, args.rounds)
        print(f"\n## Second turn, {args.rounds} alternating rounds")
        print("| mode | prompt tokens evaluated / total | TTFT ms (median) |")
        print("|---|---|---|")
        for mode in ("warm", "cold"):
            done, total = t["evaluated"][mode]
            print(
                f"| {mode} (prefix {'reused' if mode == 'warm' else 'not reused'}) "
                f"| {done} / {total} | {t[mode + '_ms']:.1f} |"
            )
        print(f"second-turn TTFT ratio reused/cold: {t['ratio']:.3f}  (target <= 0.5)")
        assistant.close()


if __name__ == "__main__":
    main()
