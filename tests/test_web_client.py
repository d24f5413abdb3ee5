"""The web client in a real headless Chromium: token once, a streamed answer, a citation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api_server import start_server
from tests.memory_fixtures import make_notes

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by 'make test'")
def test_a_phone_sized_browser_pairs_asks_and_sees_a_streamed_cited_answer(home, tmp_path):
    from playwright.sync_api import sync_playwright

    server = start_server()
    server.service.assistant.memory.add([make_notes(tmp_path / "notes")])
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(viewport={"width": 390, "height": 780}, is_mobile=True)
            page.goto(server.url + "/")
            page.wait_for_selector("#pairing:not([hidden])")
            page.fill("#token", server.token)
            page.click("#token-form button")
            page.fill("#prompt", "Who services the boiler?")
            page.keyboard.press("Enter")
            page.wait_for_function("(document.querySelector('.msg.assistant')?.textContent || '').length > 5")
            page.wait_for_selector(".sources li", timeout=120_000)
            answer = page.text_content(".msg.assistant")
            citation = page.text_content(".sources li")
            stored_token = page.evaluate("localStorage.getItem('lantern-token')")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web-client.png"), full_page=True)
            page.reload()  # the token is asked once, then remembered
            pairing_hidden = page.eval_on_selector("#pairing", "el => el.hidden")
            manifest = page.evaluate("fetch('/static/manifest.webmanifest').then(r => r.json())")
            browser.close()
    finally:
        server.stop()
    assert answer.strip() and citation == "home/scan.pdf › page 1"
    assert stored_token == server.token and pairing_hidden
    assert manifest["display"] == "standalone" and manifest["icons"]


def test_every_web_asset_is_served_locally():
    index = (Path(__file__).parents[1] / "android_client_api" / "static" / "index.html").read_text()
    assert "http://" not in index and "https://" not in index  # no CDN: the phone may be offline
