"""What the web client tests share: Debian's Chromium driven by Playwright, a phone and a desktop,
the app opened already paired, and the few steps every story repeats (open a chat, ask, wait)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.api_server import RunningServer

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).parents[1]
ARTIFACTS = Path(__file__).parent / "artifacts"
PHONE = {"viewport": {"width": 390, "height": 780}, "is_mobile": True, "has_touch": True}
SMALL_PHONE = {"viewport": {"width": 320, "height": 640}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Lantern:
    """The `lantern serve` the module's tests share. `phone_token` belongs to a device of its own
    ("web-phone"), so it survives the restart test, whose new server re-pairs "test-phone"."""

    server: RunningServer
    phone_token: str

    @property
    def store(self):
        return self.server.service.assistant.conversations

    @property
    def memory(self):
        return self.server.service.assistant.memory


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)


def open_app(browser, url: str, token: str | None, size: dict, scheme: str = "light"):
    """A fresh browser profile on the app: paired through the QR code's link when ``token`` is
    given (then ready once its models and conversations are loaded), else on the pairing screen."""
    context = browser.new_context(**size, color_scheme=scheme)
    context.set_default_timeout(60_000)
    page = context.new_page()
    if token is None:
        page.goto(url + "/")
        page.wait_for_selector("#pairing:not([hidden])")
    else:
        page.goto(f"{url}/#token={token}")
        page.wait_for_selector("body[data-ready='1']")
    return page


def stored_conversation(lantern: Lantern, title: str, exchanges: list[tuple[str, str]]) -> str:
    """A conversation already in the store (as the TUI or CLI leaves one); returns its id."""
    store = lantern.store
    conversation = store.create(lantern.server.service.model_name, "", title)
    for question, answer in exchanges:
        store.add_exchange(conversation.id, question, answer)
    return conversation.id


def open_conversation(page, title: str) -> None:
    """Open a conversation from the list: the drawer on a phone, the side panel on a desktop."""
    if page.is_visible("#menu"):
        page.click("#menu")
    page.locator("#conv-list li", has_text=title).first.locator("button.open").click()
    page.wait_for_selector("body:not(.drawer-open)", state="attached")
    page.wait_for_selector(f"#title:text-is({title!r})")


def wait_for_answer(page) -> str:
    """The last answer's text, once it is complete."""
    # Selectors, not wait_for_function: the app's Content-Security-Policy forbids eval, and tests keep it on.
    page.wait_for_selector("body:not(.busy)", state="attached", timeout=120_000)
    return page.locator(".msg.assistant").last.locator(".md").inner_text()


def ask(page, question: str) -> str:
    page.fill("#prompt", question)
    page.click("#send")
    return wait_for_answer(page)


def stored_token(page) -> str | None:
    return page.evaluate("localStorage.getItem('lantern-token')")


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"web-{name}.png"), animations="disabled")


def eventually(check, timeout: float = 60) -> bool:
    """Wait until ``check()`` holds (state the server reaches on its own); False if it never does."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def lantern_cli(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real `lantern` command line of this checkout, on ``home``."""
    env = {**os.environ, "LANTERN_HOME": str(home), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", "from app.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
