"""`lantern` with no arguments opens the terminal app, which chats with the default model."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from textual.widgets import Input, Static

from app.assistant import Assistant
from tui.app import LanternApp


async def _wait_until(pilot, condition, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if condition():
            return
        await asyncio.sleep(0.1)
        await pilot.pause()
    raise AssertionError("the app never reached the expected state")


def test_typing_a_question_streams_an_answer_and_saves_it(home):
    assistant = Assistant()
    greedy = replace(assistant.config.generation, temperature=0.0, max_tokens=24)
    assistant.config = replace(assistant.config, generation=greedy)

    async def scenario() -> str:
        app = LanternApp(assistant)
        async with app.run_test() as pilot:
            await pilot.press(*"What is the capital of France? Answer in one word.")
            await pilot.press("enter")
            answers = lambda: [str(w.content) for w in app.query(".answer").results(Static)]  # noqa: E731
            await _wait_until(
                pilot,
                lambda: any("Paris" in a for a in answers()) and not app.query_one("#prompt", Input).disabled,
            )
            return answers()[-1]

    answer = asyncio.run(scenario())
    assert "Paris" in answer
    saved = assistant.conversations.latest()
    assert saved is not None and saved.messages[-1].content == answer
    assistant.close()
