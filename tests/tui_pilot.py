"""What the TUI tests share: an assistant that answers greedily, and waiting on a Pilot."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from app.assistant import Assistant


def greedy(assistant: Assistant, max_tokens: int = 24) -> Assistant:
    """The same answer every run: temperature 0, a short answer."""
    settings = replace(assistant.config.generation, temperature=0.0, max_tokens=max_tokens)
    assistant.config = replace(assistant.config, generation=settings)
    return assistant


async def until(pilot, condition, timeout: float = 120.0) -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
        await pilot.pause()
    raise AssertionError("the app never reached the expected state")


def run_app(app, scenario, size=(100, 30)):
    """Run ``scenario(pilot)`` in ``app`` at this terminal size; close its assistant afterwards."""

    async def main():
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            return await scenario(pilot)

    try:
        return asyncio.run(main())
    finally:
        app.assistant.close()
