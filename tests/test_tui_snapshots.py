"""What the main screens look like at 80x24 and 120x40 (SVG snapshots; update them with
`.venv/bin/pytest tests/test_tui_snapshots.py --snapshot-update` after a deliberate change)."""

from __future__ import annotations

import asyncio

import pytest

from app.assistant import Assistant
from tui.app import LanternApp
from tui.screens.chat import ChatScreen


async def _settled(pilot) -> None:
    """The model is loaded and the cursor stops blinking, so every screenshot is the same."""
    for _ in range(1200):
        if isinstance(pilot.app.screen, ChatScreen) and pilot.app.screen.model_ready.is_set():
            break
        await asyncio.sleep(0.05)
    _stop_blinking(pilot)
    await pilot.pause()


def _stop_blinking(pilot) -> None:
    for widget in pilot.app.screen.query("Input, TextArea"):
        widget.cursor_blink = False


def _chat_screen_then(*keys: str):
    async def run_before(pilot) -> None:
        await _settled(pilot)
        if keys:
            await pilot.press(*keys)
            await pilot.pause()
            await pilot.app.workers.wait_for_complete()  # e.g. the picker reading quantization
            await pilot.pause()
            _stop_blinking(pilot)
            await pilot.pause()

    return run_before


@pytest.fixture
def app(home):
    assistant = Assistant()
    yield LanternApp(assistant)
    assistant.close()


SIZES = [(80, 24), (120, 40)]


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_chat_screen(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=_chat_screen_then())


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_help_screen(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=_chat_screen_then("f1"))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_memory_screen(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=_chat_screen_then("f3"))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_model_picker(snap_compare, app, size):
    assert snap_compare(app, terminal_size=size, run_before=_chat_screen_then("f4"))
