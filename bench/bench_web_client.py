"""The web client's tap to first token against the API's own time to first token, and its size.

A real `lantern serve` in its own process (the bundled SmolLM2 from a fresh data home, greedy,
16-token answers, the default config otherwise), so neither client shares its interpreter. Each
round asks the same new-chat question twice, alternating which goes first (both find the same
prefix cached): once with httpx streaming the request the web client sends (clock from the
request to the first piece of text), once in headless Chromium at phone size (clock from the Send
click to the first answer character in the DOM, both read with performance.now() in the page).
The difference is what the client adds. Then the app shell's bytes, raw and gzip (the server
sends them uncompressed; gzip is what a compressing proxy would send).

Run: .venv/bin/python bench/bench_web_client.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from tests.api_server import free_port  # noqa: E402
from tests.web_client_fixtures import PHONE, launch  # noqa: E402

STATIC = ROOT / "android_client_api" / "static"
PROMPT = "Explain in two sentences why the sky is blue."
BODY = {
    "model": "smollm2-135m-instruct",
    "messages": [{"role": "user", "content": PROMPT}],
    "stream": True,
    "lantern": {"memory": True, "save": True},  # what the web client sends for a new chat
}

WATCH = """() => {
  window.__tap = {};
  document.getElementById("send").addEventListener("click", () => (window.__tap.start = performance.now()),
    { capture: true, once: true });
  const observer = new MutationObserver(() => {
    const answers = document.querySelectorAll(".msg.assistant .md");
    const last = answers[answers.length - 1];
    if (last && last.textContent.length && !window.__tap.first) {
      window.__tap.first = performance.now();
      observer.disconnect();
    }
  });
  const all = { subtree: true, childList: true, characterData: true };
  observer.observe(document.getElementById("thread"), all);
}"""


def api_ttft(client: httpx.Client) -> float:
    """One kept-alive client, as the browser keeps its connection (a new httpx client alone costs
    tens of milliseconds)."""
    started = time.perf_counter()
    first = None
    with client.stream("POST", "/v1/chat/completions", json=BODY) as r:
        for line in r.iter_lines():
            if first is None and line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    first = time.perf_counter() - started
    return first


def browser_ttft(page) -> float:
    page.evaluate("document.getElementById('new-chat').click()")
    page.fill("#prompt", PROMPT)
    page.evaluate(WATCH)
    page.click("#send")
    page.wait_for_selector("body:not(.busy)", state="attached", timeout=120_000)
    tap = page.evaluate("window.__tap")
    return (tap["first"] - tap["start"]) / 1000


def wait_until_up(url: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(url + "/v1/lantern/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("lantern serve did not start")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def shell_sizes() -> list[tuple[str, int, int]]:
    groups = {"JS": [*STATIC.glob("*.js")], "CSS": [*STATIC.glob("*.css")], "HTML": [STATIC / "index.html"]}
    rows = []
    for name, files in groups.items():
        raw = sum(f.stat().st_size for f in files)
        packed = sum(len(gzip.compress(f.read_bytes(), 9)) for f in files)
        rows.append((name, raw, packed))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as home:
        Path(home, "config.toml").write_text("[generation]\nmax_tokens = 16\ntemperature = 0.0\n")
        env = {**os.environ, "LANTERN_HOME": home, "PYTHONPATH": str(ROOT)}
        lantern = [sys.executable, "-c", "from app.cli import main; main()"]
        paired = subprocess.run(
            [*lantern, "pair", "bench", "--json"], env=env, capture_output=True, text=True
        )
        token = json.loads(paired.stdout)["token"]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([*lantern, "serve", "--port", str(port)], env=env)
        try:
            wait_until_up(url)
            headers = {"Authorization": f"Bearer {token}"}
            with (
                sync_playwright() as playwright,
                httpx.Client(base_url=url, headers=headers, timeout=120) as client,
            ):
                browser = launch(playwright)
                page = browser.new_context(**PHONE).new_page()
                page.goto(f"{url}/#token={token}")
                page.wait_for_selector("body[data-ready='1']")
                api_ttft(client)  # warm both paths once
                browser_ttft(page)
                api, web = [], []
                for n in range(args.rounds):
                    pair = [lambda: api.append(api_ttft(client)), lambda: web.append(browser_ttft(page))]
                    for run in pair if n % 2 == 0 else reversed(pair):
                        run()
                    print(f"round {n + 1}: api {api[-1]:.3f} s, web {web[-1]:.3f} s", file=sys.stderr)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(args.rounds, api, web)


def report(rounds: int, api: list[float], web: list[float]) -> None:
    def times(label: str, values: list[float]) -> str:
        median, p95 = statistics.median(values) * 1000, percentile(values, 0.95) * 1000
        return f"| {label} | {median:.0f} ms | {p95:.0f} ms |"

    def kb(label: str, rows: list[tuple[str, int, int]]) -> str:
        return (
            f"| {label} | {sum(r[1] for r in rows) / 1000:.1f} KB | {sum(r[2] for r in rows) / 1000:.1f} KB |"
        )

    machine = platform.processor() or platform.machine()
    print(f"Web client, {rounds} rounds, {machine}, {os.cpu_count()} cores\n")
    print("| | median | p95 |\n|---|---|---|")
    print(times("API TTFT (httpx, streamed)", api))
    print(times("Tap to first token (Chromium, phone)", web))
    print(times("Added by the client (per round)", [w - a for w, a in zip(web, api, strict=True)]))
    print("\n| App shell | raw | gzip |\n|---|---|---|")
    rows = shell_sizes()
    for row in rows:
        print(kb(row[0], [row]))
    print(kb("JS + CSS", [r for r in rows if r[0] != "HTML"]))
    print(kb("JS + CSS + HTML", rows))


if __name__ == "__main__":
    main()
