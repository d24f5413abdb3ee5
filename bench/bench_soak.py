"""Soak and faults (issue 30 item 4): many clients against `lantern serve` for minutes, then a SIGKILL.

One run:
1. a fresh data home in a temp dir: a few markdown notes added with `lantern memory add`, the
   home encrypted (`lantern init --encrypt`, else `lantern memory init --encrypt`), a device paired;
2. `lantern serve` of this checkout on a free loopback port (the key through --key-file when serve
   offers it, else LANTERN_PASSPHRASE);
3. --clients threads for --minutes, each choosing at random among streamed and whole chat
   completions (new conversations and continued ones, 24-48 tokens), text completions, memory
   searches, conversation lists and reads, feedback, streams dropped after a chunk or two, and bad
   requests (no or wrong token, malformed JSON, bodies over the limit, invalid UTF-8, unknown
   conversation ids, path traversal in an id), see soak_clients.py;
4. the server's RSS sampled every few seconds: after warm-up (20% of the run) and at the end;
5. every answered conversation remembered with its answers' message ids and texts;
6. at a random moment in the last quarter, SIGKILL of the server with requests in flight; a restart
   on the same home; every answered conversation read back through the API; the server stopped;
   then `lantern memory stats`, `lantern memory search` and `lantern conversations list` in the
   home, and every file that starts with the sealed-file magic opened with the key;
7. one table and a verdict per goal.

Goals: good requests 0 failed; bad requests all get their 4xx; RSS growth after warm-up < 5%;
no answered conversation lost; no sealed file damaged. The server's RSS includes the in-memory cache
of conversation states (runtime.state_cache_mb, 256 MiB by default), which fills as conversations
accumulate: in runs much shorter than the default it is still filling after "warm-up", so judge RSS
on the full run, and on the slope over its second half (flat once the cache is full).

Run: .venv/bin/python bench/bench_soak.py [--minutes 10] [--clients 8] [--seed 0] [--json PATH]
         [--state-cache-mb N] [--keep-home]
Exit status: 0 all goals met; 1 a good request failed, a bad one was answered wrongly, data was
lost or damaged, or the server died on its own; 2 only the RSS goal was missed.
Progress on stderr, the table on stdout. Only one model-loading process at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak_clients import Client, Tally  # noqa: E402

from app.conversations import ConversationStore  # noqa: E402
from app.errors import LanternError  # noqa: E402
from app.home_key import HomeKey  # noqa: E402
from rag.errors import MemoryStoreError  # noqa: E402
from rag.sealed_file import MAGIC, read_sealed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LANTERN = [sys.executable, "-c", "from app.cli.main import main; main()"]
PASSPHRASE = "soak-bench correct horse battery staple"
NOTES = {
    "boat.md": "# The boat\n\nOur sailing boat is called the Grey Heron and is moored at pontoon C.\n",
    "bins.md": "# Bins\n\nThe recycling bins are collected every second Thursday before seven.\n",
    "lighthouse.md": "# Brittany\n\nThe lighthouse at Ploumanac'h is built from pink granite.\n",
    "bread.md": "# Bread\n\nThe sourdough starter is fed with rye flour every Sunday morning.\n",
}
FACTS = [text.splitlines()[-1] for text in NOTES.values()]
WARM_UP_SHARE, KILL_WINDOW = 0.2, (0.75, 0.95)
RSS_GOAL = 5.0  # % growth after warm-up
SAMPLE_SECONDS = 3.0


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the data home ------------------------------------------------------------------------------


@dataclass
class Home:
    root: Path
    key_file: Path
    log_file: Path
    token: str = ""

    @property
    def env(self) -> dict:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        return {
            **os.environ,
            "LANTERN_HOME": str(self.root),
            "LANTERN_PASSPHRASE": PASSPHRASE,
            "PYTHONPATH": path,
        }

    def lantern(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*LANTERN, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"lantern {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-2000:]}"
            )
        return done


def set_state_cache(home: Home, megabytes: int) -> None:
    """runtime.state_cache_mb in the home's config (0: no cache, to tell a leak from the cache filling)."""
    config = home.root / "config.toml"
    lines = config.read_text(encoding="utf-8").splitlines()
    changed = [
        f"state_cache_mb = {megabytes}" if line.startswith("state_cache_mb") else line for line in lines
    ]
    if changed == lines:
        raise RuntimeError(f"no state_cache_mb line in {config}; set it by hand or drop --state-cache-mb")
    config.write_text("\n".join(changed) + "\n", encoding="utf-8")


def prepare_home(base: Path) -> Home:
    home = Home(base / "home", base / "soak.key", base / "server.log")
    home.root.mkdir()
    notes = base / "notes"
    notes.mkdir()
    for name, text in NOTES.items():
        (notes / name).write_text(text, encoding="utf-8")
    home.key_file.write_bytes(PASSPHRASE.encode("utf-8"))  # a key file's bytes are the secret as is
    home.key_file.chmod(0o600)
    log("adding notes")
    home.lantern("memory", "add", str(notes))
    log("encrypting the data home")
    done = home.lantern("init", "--encrypt", check=False)
    if done.returncode != 0 and "No such command" in done.stderr:
        home.lantern("memory", "init", "--encrypt")
    elif done.returncode != 0:
        raise RuntimeError(f"lantern init --encrypt exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    home.token = json.loads(home.lantern("pair", "soak-bench", "--json").stdout)["token"]
    return home


# --- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`lantern serve` as a child process that can be killed and started again on the same home."""

    def __init__(self, home: Home, port: int):
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        help_text = home.lantern("serve", "--help").stdout
        self.key_option = ["--key-file", str(home.key_file)] if "--key-file" in help_text else []

    def start(self, timeout: float = 300) -> None:
        env = self.home.env
        if self.key_option:
            env.pop("LANTERN_PASSPHRASE")  # the key file alone must open the home
        command = [*LANTERN, "serve", "--port", str(self.port), *self.key_option]
        with self.home.log_file.open("ab") as out:
            self.process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"lantern serve exited with {self.process.returncode}; see the log below")
            try:
                if httpx.get(self.url + "/v1/lantern/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"lantern serve did not answer /v1/lantern/health within {timeout:.0f} s")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss(self) -> int:
        """Resident memory of the server and any children; 0 once it is gone."""
        try:
            process = psutil.Process(self.process.pid)
            return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
        except psutil.NoSuchProcess:
            return 0

    def kill(self) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if not self.alive:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Report:
    minutes: float
    clients: int
    seed: int
    kill_at_s: float = 0.0
    in_flight_at_kill: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    died_on_its_own: str = ""
    lost: list[str] = field(default_factory=list)  # answered conversations or answers not found
    found: int = 0
    cut_found: int = 0
    checks: dict = field(default_factory=dict)  # CLI checks after the restart: name -> problem or ""
    sealed_checked: int = 0
    sealed_damaged: list[str] = field(default_factory=list)
    leftover_temp_files: int = 0
    server_tracebacks: int = 0


def soak(server: Server, home: Home, report: Report, tally: Tally, seed: int) -> None:
    """The clients for --minutes; the SIGKILL somewhere in the last quarter while requests run."""
    duration = report.minutes * 60
    rng = random.Random(seed)
    report.kill_at_s = duration * rng.uniform(*KILL_WINDOW)
    stop = threading.Event()
    clients = [
        Client(server.url, home.token, tally, random.Random(seed * 1000 + i), FACTS)
        for i in range(report.clients)
    ]
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in clients]
    started = time.monotonic()
    for t in threads:
        t.start()
    next_sample = 0.0
    while (elapsed := time.monotonic() - started) < report.kill_at_s:
        if not server.alive:
            report.died_on_its_own = f"the server exited with {server.process.returncode} at {elapsed:.0f} s"
            break
        if elapsed >= next_sample:
            if rss := server.rss():
                report.rss.append((elapsed, rss))
            next_sample = elapsed + SAMPLE_SECONDS
        time.sleep(0.2)
    if not report.died_on_its_own:
        for _ in range(50):  # kill with something in flight, not between requests
            if tally.in_flight >= max(1, report.clients // 2):
                break
            time.sleep(0.1)
        if rss := server.rss():
            report.rss.append((time.monotonic() - started, rss))
        report.in_flight_at_kill = tally.in_flight
        log(f"SIGKILL at {time.monotonic() - started:.0f} s with {tally.in_flight} requests in flight")
        stop.set()  # no new requests: only those in flight meet the kill
        tally.killing.set()
        server.kill()
    stop.set()
    for t in threads:
        t.join(timeout=240)


def verify_after_restart(server: Server, home: Home, report: Report, tally: Tally) -> None:
    """Every answer a client received in full is in its conversation, through the API."""
    auth = {"Authorization": f"Bearer {home.token}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=60) as http:
        for conversation_id, answers in sorted(tally.answered.items()):
            r = http.get(f"/v1/lantern/conversations/{conversation_id}")
            if r.status_code != 200:
                report.lost.append(f"{conversation_id}: HTTP {r.status_code} {r.text[:200]}")
                continue
            stored = {m["id"]: m for m in r.json()["messages"]}
            gone = [a for a in answers if a.message_id not in stored]
            changed = [
                a
                for a in answers
                if a.message_id in stored and stored[a.message_id]["content"].strip() != a.text.strip()
            ]
            if gone or changed:
                report.lost.append(f"{conversation_id}: {len(gone)} answers missing, {len(changed)} altered")
            else:
                report.found += 1
        for conversation_id in tally.cut_by_kill - set(tally.answered):
            if http.get(f"/v1/lantern/conversations/{conversation_id}").status_code == 200:
                report.cut_found += 1
        # The restarted server still answers.
        body = {
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 8,
            "lantern": {"save": True},
        }
        r = http.post("/v1/chat/completions", json=body)
        report.checks["chat after restart"] = (
            "" if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
        )
        r = http.post("/v1/lantern/memory/search", json={"query": FACTS[0], "k": 3})
        hits = r.json().get("hits", []) if r.status_code == 200 else []
        good = hits and "Grey Heron" in hits[0]["text"]
        report.checks["API search after restart"] = "" if good else f"HTTP {r.status_code}: {r.text[:200]}"


def verify_with_cli(home: Home, report: Report, tally: Tally) -> None:
    """With the server stopped: the CLI opens the memory and the conversations (one process at a time)."""
    stats = home.lantern("memory", "stats", "--json", check=False)
    if stats.returncode != 0:
        report.checks["memory stats"] = stats.stderr.strip()[-300:]
    else:
        facts = json.loads(stats.stdout)
        ok = facts.get("encrypted") and facts.get("files") == len(NOTES)
        report.checks["memory stats"] = "" if ok else f"unexpected: {stats.stdout.strip()}"
    search = home.lantern("memory", "search", FACTS[2], "--json", check=False)
    found = search.returncode == 0 and "pink granite" in search.stdout
    report.checks["memory search"] = "" if found else (search.stderr or search.stdout).strip()[-300:]
    listing = home.lantern("conversations", "list", "--limit", "1000000", check=False)
    if listing.returncode != 0:
        report.checks["conversations list"] = listing.stderr.strip()[-300:]
    else:
        listed = {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}
        missing = set(tally.answered) - listed
        report.checks["conversations list"] = (
            f"{len(missing)} answered conversations not listed" if missing else ""
        )


def check_sealed_files(home: Home, report: Report) -> None:
    """Open every sealed file with the home's data key (from the key file the server used), and
    the conversation database through SQLCipher, which checks every page's HMAC at open."""
    key = HomeKey(home.root, home.key_file.read_bytes)
    cipher = key.data_cipher()
    for path in sorted(home.root.rglob("*")):
        if not path.is_file():
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            report.leftover_temp_files += 1
            continue
        with path.open("rb") as f:
            head = f.read(len(MAGIC))
        if path.suffix == ".sqlite3":
            report.sealed_checked += 1
            try:
                ConversationStore(path, key.database_key()).close()
            except LanternError as exc:
                report.sealed_damaged.append(str(exc))
            continue
        if head != MAGIC:
            continue
        report.sealed_checked += 1
        try:
            read_sealed(path, cipher)
        except MemoryStoreError as exc:
            report.sealed_damaged.append(str(exc))


# --- the table ----------------------------------------------------------------------------------


def table(header: list[str], rows: list[list]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    print()


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def rss_figures(report: Report) -> tuple[int, int, float]:
    """RSS at the end of warm-up, at the end (just before the kill), and the growth in %."""
    warm_at = report.minutes * 60 * WARM_UP_SHARE
    after = [rss for t, rss in report.rss if t >= warm_at] or [rss for _, rss in report.rss[-1:]]
    if not after:
        return 0, 0, float("nan")
    # Medians of three samples, so one sample taken mid-allocation does not decide the verdict.
    warm, end = statistics.median(after[:3]), statistics.median(after[-3:])
    return int(warm), int(end), 100.0 * (end - warm) / warm


def rss_slope(report: Report) -> float:
    """MiB per minute over the second half of the samples (least squares): still growing, or flat."""
    half = report.rss[len(report.rss) // 2 :]
    if len(half) < 3:
        return float("nan")
    ts, ys = [t / 60 for t, _ in half], [rss / 2**20 for _, rss in half]
    mean_t, mean_y = statistics.fmean(ts), statistics.fmean(ys)
    spread = sum((t - mean_t) ** 2 for t in ts)
    return sum((t - mean_t) * (y - mean_y) for t, y in zip(ts, ys, strict=True)) / spread if spread else 0.0


def summarise(report: Report, tally: Tally) -> tuple[dict, int]:
    outcomes = ("ok", "failed", "expected_4xx", "surprise", "backpressure_503", "cut_by_kill")
    rows = [[kind, *(tally.counts[kind][o] for o in outcomes)] for kind in sorted(tally.counts)]
    totals = {o: sum(tally.counts[k][o] for k in tally.counts) for o in outcomes}
    table(["requests", *outcomes], [*rows, ["**all**", *totals.values()]])
    if tally.errors:
        print("First errors:\n" + "\n".join(f"- {e}" for e in tally.errors) + "\n")

    warm, end, growth = rss_figures(report)
    peak = max((rss for _, rss in report.rss), default=0)
    mib = 1024 * 1024
    cut = len(tally.cut_by_kill - set(tally.answered))
    problems = {name: problem for name, problem in report.checks.items() if problem}
    table(
        ["measure", "value"],
        [
            [
                "good chat latency p50 / p95 (s)",
                f"{percentile(tally.chat_latency, 0.5):.2f} / {percentile(tally.chat_latency, 0.95):.2f}",
            ],
            [
                "stream first token p50 / p95 (s)",
                f"{percentile(tally.first_token, 0.5):.2f} / {percentile(tally.first_token, 0.95):.2f}",
            ],
            [
                "RSS after warm-up -> end (MiB)",
                f"{warm / mib:.0f} -> {end / mib:.0f} (peak {peak / mib:.0f})",
            ],
            ["RSS growth / slope over the second half", f"{growth:+.1f}% / {rss_slope(report):+.1f} MiB/min"],
            ["SIGKILL at (s) / requests in flight", f"{report.kill_at_s:.0f} / {report.in_flight_at_kill}"],
            ["conversations answered / found after restart", f"{len(tally.answered)} / {report.found}"],
            ["conversations cut by the kill (found anyway)", f"{cut} ({report.cut_found})"],
            ["sealed files checked / damaged", f"{report.sealed_checked} / {len(report.sealed_damaged)}"],
            ["leftover temp files", report.leftover_temp_files],
            ["tracebacks in the server log", report.server_tracebacks],
            [
                "checks after restart",
                ", ".join(f"{k}: {'ok' if not v else 'FAILED'}" for k, v in report.checks.items()),
            ],
        ],
    )
    for name, problem in problems.items():
        print(f"- check {name}: {problem}")
    for line in report.lost[:10]:
        print(f"- lost: {line}")
    for line in report.sealed_damaged[:10]:
        print(f"- damaged: {line}")

    verdicts = {
        "good requests 0 failed": totals["failed"] == 0,
        "bad requests all got their 4xx": totals["surprise"] == 0,
        "server ran until the kill": not report.died_on_its_own,
        f"RSS growth after warm-up < {RSS_GOAL:.0f}%": growth < RSS_GOAL,
        "every answered conversation found after restart": not report.lost
        and report.found == len(tally.answered),
        "no sealed file damaged, every check passed": not report.sealed_damaged and not problems,
    }
    print()
    for goal, met in verdicts.items():
        print(f"{'PASS' if met else 'FAIL'}  {goal}")
    if report.died_on_its_own:
        print(f"      {report.died_on_its_own}")
    failed = [g for g, met in verdicts.items() if not met]
    status = 0 if not failed else 2 if failed == [f"RSS growth after warm-up < {RSS_GOAL:.0f}%"] else 1
    result = {
        "minutes": report.minutes,
        "clients": report.clients,
        "seed": report.seed,
        "requests": {k: dict(v) for k, v in tally.counts.items()},
        "errors": tally.errors,
        "chat_latency_s": {
            "p50": percentile(tally.chat_latency, 0.5),
            "p95": percentile(tally.chat_latency, 0.95),
        },
        "first_token_s": {
            "p50": percentile(tally.first_token, 0.5),
            "p95": percentile(tally.first_token, 0.95),
        },
        "rss_bytes": {
            "warm": warm,
            "end": end,
            "peak": peak,
            "growth_pct": growth,
            "slope_mib_per_min": rss_slope(report),
            "samples": report.rss,
        },
        "kill_at_s": report.kill_at_s,
        "in_flight_at_kill": report.in_flight_at_kill,
        "conversations": {
            "answered": len(tally.answered),
            "found": report.found,
            "cut_by_kill": cut,
            "cut_found": report.cut_found,
            "lost": report.lost,
        },
        "sealed_files": {"checked": report.sealed_checked, "damaged": report.sealed_damaged},
        "leftover_temp_files": report.leftover_temp_files,
        "server_tracebacks": report.server_tracebacks,
        "checks": report.checks,
        "died_on_its_own": report.died_on_its_own,
        "verdicts": verdicts,
        "exit_status": status,
    }
    return result, status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="How long the clients run (default 10).")
    parser.add_argument("--clients", type=int, default=8, help="Client threads (default 8).")
    parser.add_argument("--seed", type=int, default=0, help="Seeds the clients' choices and the kill moment.")
    parser.add_argument("--json", type=Path, help="Also write the figures here as JSON.")
    parser.add_argument(
        "--state-cache-mb",
        type=int,
        help="Set runtime.state_cache_mb in the temp home (default: the config's, 256); 0 turns the "
        "in-memory conversation-state cache off, to tell a leak from the cache filling up.",
    )
    parser.add_argument("--keep-home", action="store_true", help="Keep the temp data home and server log.")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="lantern-soak-"))
    report, tally = Report(args.minutes, args.clients, args.seed), Tally()
    server = None
    try:
        home = prepare_home(base)
        if args.state_cache_mb is not None:
            set_state_cache(home, args.state_cache_mb)
        server = Server(home, free_port())
        key = "--key-file" if server.key_option else "LANTERN_PASSPHRASE"
        log(f"starting lantern serve on {server.url} (key from {key})")
        server.start()
        log(f"{args.clients} clients for {args.minutes:g} min")
        soak(server, home, report, tally, args.seed)
        log("restarting the server on the same home")
        server.start()
        verify_after_restart(server, home, report, tally)
        server.stop()
        log("checking the home with the CLI and opening every sealed file")
        verify_with_cli(home, report, tally)
        check_sealed_files(home, report)
        report.server_tracebacks = home.log_file.read_text(errors="replace").count("Traceback")
        result, status = summarise(report, tally)
        if report.server_tracebacks or status:
            tail = home.log_file.read_text(errors="replace")[-4000:]
            print(f"\nServer log (last 4000 characters of {home.log_file}):\n{tail}", file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return status
    except Exception:
        log_file = base / "server.log"
        if log_file.exists():
            print(f"Server log tail:\n{log_file.read_text(errors='replace')[-4000:]}", file=sys.stderr)
        raise
    finally:
        if server is not None:
            server.stop()
        if args.keep_home:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
