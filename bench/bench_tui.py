"""Keystroke to first token in the TUI versus the CLI's time to first token, same process.

The TUI is the real app under Textual's Pilot: the question is in the message box, the clock
starts as Enter is pressed and stops when the first piece of the answer is on the answer widget.
The CLI figure is what `lantern ask` runs: Assistant.ask until its first streamed piece. Both
start from an empty KV cache, greedy, alternating rounds.

Run: .venv/bin/python bench/bench_tui.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.assistant import Assistant  # noqa: E402
from app.engine import GenerationSettings  # noqa: E402
from tui.app import LanternApp  # noqa: E402
from tui.screens.chat import ChatScreen  # noqa: E402
from tui.widgets.message import AnswerMessage  # noqa: E402
from tui.widgets.prompt import PromptArea  # noqa: E402

PROMPT = "Explain in two sentences why the sky is blue."
MAX_TOKENS = 16


def cli_ttft(assistant: Assistant) -> float:
    assistant.engine().forget_cache()
    settings = GenerationSettings(max_tokens=MAX_TOKENS, temperature=0.0)
    started = time.perf_counter()
    turn = assistant.ask(PROMPT, settings=settings)
    pieces = iter(turn)
    next(pieces)
    first = time.perf_counter() - started
    for _ in pieces:
        pass
    return first


async def tui_keystroke_to_first_token(pilot, assistant: Assistant) -> float:
    chat = pilot.app.screen
    assert isinstance(chat, ChatScreen)
    await chat.action_new_chat()
    assistant.engine().forget_cache()
    prompt = chat.query_one(PromptArea)
    prompt.focus()
    prompt.insert(PROMPT)
    await pilot.pause()
    before = len(chat.query(AnswerMessage))
    started = time.perf_counter()
    await pilot.press("enter")
    while len(chat.query(AnswerMessage)) <= before or chat.answering:
        await asyncio.sleep(0.01)
    return list(chat.query(AnswerMessage))[-1].first_piece_at - started


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        assistant = Assistant(home)
        generation = replace(assistant.config.generation, temperature=0.0, max_tokens=MAX_TOKENS)
        assistant.config = replace(assistant.config, generation=generation)
        app = LanternApp(assistant)
        cli, tui = [], []
        async with app.run_test(size=(120, 40)) as pilot:
            while not (isinstance(app.screen, ChatScreen) and app.screen.model_ready.is_set()):
                await asyncio.sleep(0.05)
            cli_ttft(assistant)  # warm both paths once
            await tui_keystroke_to_first_token(pilot, assistant)
            for round_ in range(rounds):
                if round_ % 2 == 0:
                    cli.append(cli_ttft(assistant))
                    tui.append(await tui_keystroke_to_first_token(pilot, assistant))
                else:
                    tui.append(await tui_keystroke_to_first_token(pilot, assistant))
                    cli.append(cli_ttft(assistant))
        assistant.close()
    cli_ms, tui_ms = statistics.median(cli) * 1000, statistics.median(tui) * 1000
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{rounds} alternating rounds, prompt {PROMPT!r}, KV cache cleared each time")
    print(f"CLI time to first token, median:            {cli_ms:.1f} ms  {[round(x * 1000, 1) for x in cli]}")
    print(f"TUI keystroke to first token shown, median: {tui_ms:.1f} ms  {[round(x * 1000, 1) for x in tui]}")
    print(f"difference TUI - CLI: {tui_ms - cli_ms:+.1f} ms  (target <= 50 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    asyncio.run(main(parser.parse_args().rounds))
