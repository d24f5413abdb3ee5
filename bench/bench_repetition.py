"""How often answers fall into a loop, with each repetition guard (issue 29, item 5).

Every prompt of a set (bench/data/repetition_tuning.jsonl or repetition_report.jsonl, see
bench/data/README.md) is answered with each guard, as `lantern ask` answers it: the assistant,
the default sampling (temperature 0.2, top-p 0.95, max tokens 512), the prompt's own seed, and
the memory for the prompts marked ``memory`` (Python's pydoc topics and man pages, built by
memory_corpus.py, as in the issue). A loop is what app/loops.py says it is. The guards run in
turn on each prompt, so a busy machine slows them alike.

An answer is stopped as soon as it loops (checked every 32 pieces): a loop found in part of an
answer stays one in the whole (the detector only ever finds more in a longer text), and on a
slow machine the rest of a loop to the token limit is most of the time. So "mean tokens" and
"wall s" count tokens up to the loop, not to the limit. The model runs on one thread
(`runtime.threads = 1` in the bench's data home): on a shared 2-core machine two threads wait on
each other (measured: 1.4 against 7.2 tokens/s).

Run: .venv/bin/python bench/bench_repetition.py --set tuning \\
         --guards off,penalty:1.1,penalty:1.2,dry:0.4,dry:0.8 [--home DIR] [--answers OUT.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_corpus import build_corpus  # noqa: E402

from app.assistant import Assistant  # noqa: E402
from app.loops import find_loop  # noqa: E402

CHECK_EVERY = 32  # pieces between loop checks while an answer streams

DATA = Path(__file__).resolve().parent / "data"
SETS = {"tuning": DATA / "repetition_tuning.jsonl", "report": DATA / "repetition_report.jsonl"}


def parse_guard(text: str) -> tuple[str, dict]:
    """``off``, ``penalty:1.1`` or ``dry:0.8`` -> the settings fields it sets."""
    kind, _, strength = text.partition(":")
    if kind == "off":
        return text, {"repetition_guard": "off"}
    if kind == "penalty":
        return text, {"repetition_guard": "penalty", "repeat_penalty": float(strength or 1.1)}
    if kind == "dry":
        return text, {"repetition_guard": "dry", "dry_multiplier": float(strength or 0.8)}
    raise SystemExit(f"unknown guard {text!r}: off, penalty:STRENGTH or dry:STRENGTH")


def prepare_home(home: Path) -> None:
    """A data home whose memory holds the pydoc + man page corpus (built once, then reused)."""
    if (home / "memory").exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[runtime]\nthreads = 1\n", encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="lantern-corpus-") as tmp:
        corpus = Path(tmp) / "corpus"
        build_corpus(corpus)
        env = {**os.environ, "LANTERN_HOME": str(home)}
        lantern = [sys.executable, "-c", "from app.cli import main; main()"]
        subprocess.run([*lantern, "memory", "add", str(corpus)], check=True, env=env)


def answer(assistant: Assistant, prompt: dict, settings):
    """The answer as `lantern ask` gives it, stopped early once it loops; (turn, loop)."""
    turn = assistant.ask(prompt["prompt"], settings=settings, use_memory=prompt["memory"])
    pieces: list[str] = []
    loop = None
    for piece in turn:
        pieces.append(piece)
        if loop is None and len(pieces) % CHECK_EVERY == 0:
            loop = find_loop("".join(pieces))
            if loop is not None:
                turn.stream.cancel()
    return turn, loop or find_loop(turn.result.text, turn.result.finish_reason == "length")


def summarize(paths: list[Path]) -> None:
    """The looping share per guard from --answers files, over the prompts every guard answered."""
    records = [json.loads(line) for path in paths for line in path.read_text(encoding="utf-8").splitlines()]
    guards = list(dict.fromkeys(r["guard"] for r in records))
    by_prompt: dict[str, dict[str, dict]] = {}
    for record in records:
        by_prompt.setdefault(record["id"], {})[record["guard"]] = record
    complete = sorted(p for p, answers in by_prompt.items() if len(answers) == len(guards))
    n = len(complete)
    print(f"{n} prompts answered under every guard ({len(by_prompt) - n} more under some)")
    print(
        f"{'guard':<12} {'looping':>12} {'token limit':>12} {'cut at loop':>12} {'mean tokens':>12}  looping"
    )
    for guard in guards:
        rows = [by_prompt[p][guard] for p in complete]
        # Judged again with today's detector (a loop cut short stays one: the detector only finds more).
        loops = [r["id"] for r in rows if find_loop(r["text"], r["finish_reason"] == "length")]
        length = sum(r["finish_reason"] == "length" for r in rows)
        cut = sum(r["finish_reason"] == "cancelled" for r in rows)
        tokens = sum(r["completion_tokens"] for r in rows) / max(n, 1)
        share = f"{len(loops) / n:.1%}" if n else "-"
        print(
            f"{guard:<12} {len(loops):>3}/{n} {share:>6} {length:>12} {cut:>12} {tokens:>12.0f}  "
            + " ".join(loops)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), default="tuning")
    parser.add_argument("--guards", default="off,penalty:1.1,dry:0.8")
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "lantern-bench-repetition")
    parser.add_argument("--answers", type=Path, help="write every answer here as JSON lines")
    parser.add_argument("--limit", type=int, help="only the first N prompts (a smoke run)")
    parser.add_argument(
        "--summarize",
        nargs="+",
        type=Path,
        metavar="ANSWERS",
        help="print the table of earlier --answers files (the prompts answered under every guard)",
    )
    parser.add_argument(
        "--only", choices=("memory", "plain"), help="only the prompts with (or without) memory"
    )
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return

    prompts = [json.loads(line) for line in SETS[args.set].read_text(encoding="utf-8").splitlines()]
    if args.only:
        prompts = [p for p in prompts if p["memory"] == (args.only == "memory")]
    prompts = prompts[: args.limit] if args.limit else prompts
    guards = [parse_guard(g) for g in args.guards.split(",")]
    prepare_home(args.home)
    assistant = Assistant(args.home)
    base = assistant.settings()  # the config's defaults: what `lantern ask` uses
    assistant.engine()
    stats = {
        name: {"loops": [], "length": 0, "stopped": 0, "tokens": 0, "seconds": 0.0} for name, _ in guards
    }
    out = args.answers.open("w", encoding="utf-8") if args.answers else None
    for prompt in prompts:
        for name, fields in guards:
            settings = replace(base, seed=prompt["seed"], **fields)
            started = time.perf_counter()
            turn, loop = answer(assistant, prompt, settings)
            seconds = time.perf_counter() - started
            result = turn.result
            row = stats[name]
            row["seconds"] += seconds
            row["tokens"] += result.completion_tokens
            row["length"] += result.finish_reason == "length"
            row["stopped"] += result.finish_reason == "cancelled"
            if loop:
                row["loops"].append(prompt["id"])
            if out:
                record = {
                    "id": prompt["id"],
                    "guard": name,
                    "finish_reason": result.finish_reason,
                    "completion_tokens": result.completion_tokens,
                    "seconds": round(seconds, 2),
                    "loop": None
                    if loop is None
                    else {"kind": loop.kind, "unit": loop.unit, "copies": loop.copies},
                    "citations": [hit.source for hit in turn.citations],
                    "text": result.text,
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
            print(
                f"{prompt['id']} {name:<12} {'LOOP' if loop else 'ok  '} {result.finish_reason:<6} "
                f"{result.completion_tokens:>4} tokens {seconds:6.1f} s",
                file=sys.stderr,
                flush=True,
            )
    assistant.close()

    n = len(prompts)
    subset = f" ({args.only})" if args.only else ""
    print(
        f"\n{args.set} set{subset}, {n} prompts, temperature {base.temperature}, max tokens {base.max_tokens}"
    )
    print(
        f"{'guard':<12} {'looping':>12} {'token limit':>12} {'cut at loop':>12} {'mean tokens':>12} "
        f"{'wall s':>8}  looping prompts"
    )
    for name, _ in guards:
        row = stats[name]
        looping = len(row["loops"])
        print(
            f"{name:<12} {looping:>3}/{n} {looping / n:>6.1%} {row['length']:>12} {row['stopped']:>12} "
            f"{row['tokens'] / n:>12.0f} {row['seconds']:>8.0f}  {' '.join(row['loops'])}"
        )


if __name__ == "__main__":
    main()
