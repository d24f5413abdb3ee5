"""Issue 30: how should Lantern seal its conversation database? Measure three stores side by side.

  plain     stdlib sqlite3, as app/conversations.py does today (WAL, foreign keys,
            isolation_level=None with explicit BEGIN/COMMIT): the anchor.
  sqlcipher the whole database through SQLCipher (the ``sqlcipher3`` binding, raw 32-byte key),
            same schema and same SQL, also WAL.
  columns   stdlib sqlite3 with the text columns sealed by rag.crypto.Cipher (AES-256-GCM): title,
            system_prompt, content, citations, prompt/chosen/rejected. The aad names the table,
            the column and the row (and conversation), so sealed values cannot be swapped between
            rows. Search decrypts in Python.

The workload is the one of app/conversations.py: create, add_exchange (user turn + answer +
updated_at in one transaction), list (20 most recent with message counts), get, search (LIKE over
titles and contents), add_feedback. Then correctness checks: no plaintext in db/-wal/-shm, wrong
key, a flipped byte, and migrating a plain database into SQLCipher with sqlcipher_export.

    PYTHONPATH=. python bench/bench_sealed_sqlite.py [--conversations 200] [--exchanges 10]
        [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidTag
from sqlcipher3 import dbapi2 as sqlcipher

from app.conversations import MIGRATIONS
from rag.crypto import Cipher

RARE_WORD = "zephyrine"  # put in ~1% of messages: the search target
RARE_RATE = 0.01
KEY = bytes(range(32))
WRONG_KEY = bytes(range(1, 33))
LOG_SILENCERS = ("PRAGMA cipher_log_level = NONE", "PRAGMA cipher_log = off")

WORDS = (
    "the a of to and in is that for it on with as this be are by from or an at which can when "
    "model memory passage answer question local offline network file index vector token prompt "
    "context window engine quantized weights layer attention batch latency throughput cache "
    "garden recipe travel budget meeting invoice letter report schedule holiday weather river "
    "mountain library history chapter summary translation grammar sentence paragraph argument "
    "because however therefore although usually perhaps clearly quickly carefully simply "
    "python function class method error exception test release version install package"
).split()


# ---------------------------------------------------------------- workload


@dataclass(frozen=True)
class Exchange:
    prompt: str
    answer: str
    citations: list[dict]


@dataclass(frozen=True)
class Workload:
    system_prompts: list[str]
    conversations: list[list[Exchange]]

    @property
    def messages(self) -> int:
        return 2 * sum(len(c) for c in self.conversations)

    def sample_sentences(self) -> list[str]:
        """Plaintext that must not appear in a sealed file: answers, prompts, the rare word."""
        picks = [self.conversations[i][0] for i in range(0, len(self.conversations), 17)]
        return [p.answer[:40] for p in picks] + [p.prompt[:30] for p in picks] + [RARE_WORD]


def _text(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        n = rng.randint(6, 14)
        sentence = " ".join(rng.choice(WORDS) for _ in range(n))
        if rng.random() < RARE_RATE / max(1, length // 80):  # ~RARE_RATE of messages overall
            sentence += " " + RARE_WORD
        sentence = sentence[0].upper() + sentence[1:] + "."
        words.append(sentence)
        size += len(sentence) + 1
    return " ".join(words)[:length]


def make_workload(conversations: int, exchanges: int, seed: int = 30) -> Workload:
    rng = random.Random(seed)
    systems = ["You are Lantern, a careful offline assistant.", ""]
    convs = [
        [
            Exchange(
                prompt=_text(rng, rng.randint(90, 150)),
                answer=_text(rng, rng.randint(450, 750)),
                citations=[
                    {"source": f"notes/{rng.randint(1, 500)}.md", "chunk": rng.randint(0, 40), "score": 0.5}
                    for _ in range(rng.randint(0, 3))
                ],
            )
            for _ in range(exchanges)
        ]
        for _ in range(conversations)
    ]
    return Workload(systems, convs)


def _title_from(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= 60 else line[:57] + "..."


def _escape_like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Clock:
    """Deterministic, increasing timestamps, so ordering by updated_at is stable across stores."""

    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> str:
        self.t += timedelta(seconds=7)
        return self.t.isoformat(timespec="seconds")


# ---------------------------------------------------------------- stores


def _hexkey(key: bytes) -> str:
    return f"\"x'{key.hex()}'\""


def _migrate(db) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number in range(version, len(MIGRATIONS)):
        db.executescript(f"BEGIN; {MIGRATIONS[number]} PRAGMA user_version = {number + 1}; COMMIT;")


class SqlStore:
    """The SQL of app/conversations.py, on stdlib sqlite3 (plain) or sqlcipher3 (keyed)."""

    name = "plain"
    begin_write = "BEGIN"

    def __init__(self, path: Path, key: bytes | None = None, clock: Clock | None = None):
        self.path = path
        self.clock = clock or Clock()
        self.db = self._connect(key)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        _migrate(self.db)

    def _connect(self, key: bytes | None):
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    def close(self) -> None:
        self.db.close()

    def checkpoint(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def integrity(self) -> list[str]:
        return [r[0] for r in self.db.execute("PRAGMA quick_check")]

    def create(self, cid: str, system_prompt: str, first_prompt: str) -> None:
        now = self.clock.now()
        self.db.execute(
            "INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?)",
            (cid, _title_from(first_prompt), "qwen3-4b", system_prompt, now, now),
        )

    def add_exchange(self, cid: str, ex: Exchange) -> int:
        now = self.clock.now()
        self.db.execute(self.begin_write)
        try:
            self.db.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at, prompt_tokens)"
                " VALUES (?, 'user', ?, ?, ?)",
                (cid, ex.prompt, now, 40),
            )
            answer_id = self.db.execute(
                "INSERT INTO messages"
                " (conversation_id, role, content, created_at, completion_tokens, model, citations)"
                " VALUES (?, 'assistant', ?, ?, ?, ?, ?)",
                (cid, ex.answer, now, 150, "qwen3-4b", json.dumps(ex.citations)),
            ).lastrowid
            self.db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, cid))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return answer_id

    def list(self, limit: int = 20) -> list[tuple[str, str, int]]:
        rows = self.db.execute(
            "SELECT c.id, c.title, c.system_prompt,"
            " (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n"
            " FROM conversations c ORDER BY updated_at DESC, rowid DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [(r[0], r[1], r[3]) for r in rows]

    def get(self, cid: str) -> list[tuple[int, str, str, list]]:
        self.db.execute("SELECT * FROM conversations WHERE id = ?", (cid,)).fetchone()
        return [
            (r[0], r[1], r[2], json.loads(r[3] or "[]"))
            for r in self.db.execute(
                "SELECT id, role, content, citations FROM messages WHERE conversation_id = ? ORDER BY id",
                (cid,),
            )
        ]

    def search(self, text: str, limit: int = 50) -> list[str]:
        rows = self.db.execute(
            "SELECT c.id, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n"
            " FROM conversations c WHERE c.title LIKE ?1 ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m"
            " WHERE m.conversation_id = c.id AND m.content LIKE ?1 ESCAPE '\\')"
            " ORDER BY updated_at DESC, rowid DESC LIMIT ?2",
            (_escape_like(text), limit),
        ).fetchall()
        return [r[0] for r in rows]

    def add_feedback(self, cid: str, message_id: int, rating: int) -> None:
        """As app/conversations.py: load the conversation, build the prompt, replace + insert."""
        messages = self.get(cid)
        position = [m[0] for m in messages].index(message_id)
        prompt = [{"role": m[1], "content": m[2]} for m in messages[:position]]
        answer = messages[position][2]
        chosen, rejected = (answer, None) if rating > 0 else (None, answer)
        self.db.execute(self.begin_write)
        self.db.execute(
            "DELETE FROM feedback WHERE message_id = ? AND NOT (chosen IS NOT NULL AND rejected IS NOT NULL)",
            (message_id,),
        )
        self._insert_feedback(cid, message_id, json.dumps(prompt), chosen, rejected, rating)
        self.db.execute("COMMIT")

    def _insert_feedback(self, cid, message_id, prompt, chosen, rejected, rating) -> None:
        self.db.execute(
            "INSERT INTO feedback (conversation_id, message_id, prompt, chosen, rejected, rating, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cid, message_id, prompt, chosen, rejected, rating, self.clock.now()),
        )


class SqlCipherStore(SqlStore):
    """Same SQL; the key is the first statement, then a read that proves it, then the pragmas."""

    name = "sqlcipher"

    def _connect(self, key: bytes | None):
        db = sqlcipher.connect(str(self.path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA cipher_log_level = NONE")  # no "ERROR CORE ..." lines on stderr
        db.execute(f"PRAGMA key = {_hexkey(key)}")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # wrong key fails here
        return db

    def integrity(self) -> list[str]:
        """cipher_integrity_check checks every page's HMAC; it returns no rows when all is well."""
        return [r[0] for r in self.db.execute("PRAGMA cipher_integrity_check")] or ["ok"]


class ColumnSealedStore(SqlStore):
    """Stdlib sqlite3; text columns sealed with AES-256-GCM, the aad naming table/column/row."""

    name = "columns"
    begin_write = "BEGIN IMMEDIATE"  # ids are chosen before the insert: hold the write lock

    def __init__(self, path: Path, key: bytes | None = None, clock: Clock | None = None):
        self.cipher = Cipher(key)
        super().__init__(path, None, clock)
        row = self.db.execute("SELECT id, title FROM conversations LIMIT 1").fetchone()
        if row:  # the key check: one value must open
            self._open(row[1], "conversations", "title", row[0])

    def _seal(self, text: str | None, table: str, column: str, row) -> bytes | None:
        if text is None:
            return None
        return self.cipher.seal(text.encode(), f"{table}/{column}/{row}".encode())

    def _open(self, blob: bytes | None, table: str, column: str, row) -> str | None:
        if blob is None:
            return None
        return self.cipher.open(blob, f"{table}/{column}/{row}".encode()).decode()

    def integrity(self) -> list[str]:
        """quick_check, then open every sealed value (what it takes to find a damaged one)."""
        problems = [r[0] for r in self.db.execute("PRAGMA quick_check") if r[0] != "ok"]
        for cid, title, system in self.db.execute("SELECT id, title, system_prompt FROM conversations"):
            problems += self._try_open([(title, "title"), (system, "system_prompt")], "conversations", cid)
        for mid, cid, content, citations in self.db.execute(
            "SELECT id, conversation_id, content, citations FROM messages"
        ):
            row = f"{mid}/{cid}"
            problems += self._try_open([(content, "content"), (citations, "citations")], "messages", row)
        for fid, cid, mid, p, c, r in self.db.execute(
            "SELECT id, conversation_id, message_id, prompt, chosen, rejected FROM feedback"
        ):
            row = f"{fid}/{cid}/{mid}"
            problems += self._try_open([(p, "prompt"), (c, "chosen"), (r, "rejected")], "feedback", row)
        return problems or ["ok"]

    def _try_open(self, values, table: str, row) -> list[str]:
        out = []
        for blob, column in values:
            try:
                self._open(blob, table, column, row)
            except InvalidTag:
                out.append(f"{table}.{column} of row {row} does not open (InvalidTag)")
        return out

    def _next_id(self, table: str) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        return (row[0] if row else 0) + 1

    def create(self, cid: str, system_prompt: str, first_prompt: str) -> None:
        now = self.clock.now()
        title = self._seal(_title_from(first_prompt), "conversations", "title", cid)
        system = self._seal(system_prompt, "conversations", "system_prompt", cid)
        self.db.execute(
            "INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?)", (cid, title, "qwen3-4b", system, now, now)
        )

    def add_exchange(self, cid: str, ex: Exchange) -> int:
        now = self.clock.now()
        self.db.execute(self.begin_write)
        try:
            user_id = self._next_id("messages")
            answer_id = user_id + 1
            self.db.execute(
                "INSERT INTO messages (id, conversation_id, role, content, created_at, prompt_tokens)"
                " VALUES (?, ?, 'user', ?, ?, ?)",
                (user_id, cid, self._seal(ex.prompt, "messages", "content", f"{user_id}/{cid}"), now, 40),
            )
            row = f"{answer_id}/{cid}"
            self.db.execute(
                "INSERT INTO messages (id, conversation_id, role, content, created_at,"
                " completion_tokens, model, citations) VALUES (?, ?, 'assistant', ?, ?, ?, ?, ?)",
                (
                    answer_id,
                    cid,
                    self._seal(ex.answer, "messages", "content", row),
                    now,
                    150,
                    "qwen3-4b",
                    self._seal(json.dumps(ex.citations), "messages", "citations", row),
                ),
            )
            self.db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, cid))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return answer_id

    def list(self, limit: int = 20) -> list[tuple[str, str, int]]:
        rows = self.db.execute(
            "SELECT c.id, c.title, c.system_prompt,"
            " (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n"
            " FROM conversations c ORDER BY updated_at DESC, rowid DESC LIMIT ?",
            (limit,),
        ).fetchall()
        out = []
        for cid, title, system, n in rows:
            self._open(system, "conversations", "system_prompt", cid)
            out.append((cid, self._open(title, "conversations", "title", cid), n))
        return out

    def get(self, cid: str) -> list[tuple[int, str, str, list]]:
        row = self.db.execute("SELECT * FROM conversations WHERE id = ?", (cid,)).fetchone()
        self._open(row[1], "conversations", "title", cid)
        self._open(row[3], "conversations", "system_prompt", cid)
        out = []
        for mid, role, content, citations in self.db.execute(
            "SELECT id, role, content, citations FROM messages WHERE conversation_id = ? ORDER BY id", (cid,)
        ):
            r = f"{mid}/{cid}"
            cites = json.loads(self._open(citations, "messages", "citations", r) or "[]")
            out.append((mid, role, self._open(content, "messages", "content", r), cites))
        return out

    def search(self, text: str, limit: int = 50) -> list[str]:
        """Decrypt titles, then every message of a not-yet-matched conversation (no LIKE possible)."""
        needle = text.casefold()
        matched = {
            cid
            for cid, title in self.db.execute("SELECT id, title FROM conversations")
            if needle in self._open(title, "conversations", "title", cid).casefold()
        }
        for mid, cid, content in self.db.execute("SELECT id, conversation_id, content FROM messages"):
            if (
                cid not in matched
                and needle in self._open(content, "messages", "content", f"{mid}/{cid}").casefold()
            ):
                matched.add(cid)
        rows = self.db.execute(
            "SELECT c.id, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)"
            " FROM conversations c ORDER BY updated_at DESC, rowid DESC"
        )
        return [r[0] for r in rows if r[0] in matched][:limit]

    def _insert_feedback(self, cid, message_id, prompt, chosen, rejected, rating) -> None:
        fid = self._next_id("feedback")
        row = f"{fid}/{cid}/{message_id}"
        self.db.execute(
            "INSERT INTO feedback (id, conversation_id, message_id, prompt, chosen, rejected, rating,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                fid,
                cid,
                message_id,
                self._seal(prompt, "feedback", "prompt", row),
                self._seal(chosen, "feedback", "chosen", row),
                self._seal(rejected, "feedback", "rejected", row),
                rating,
                self.clock.now(),
            ),
        )


STORES = {"plain": (SqlStore, None), "sqlcipher": (SqlCipherStore, KEY), "columns": (ColumnSealedStore, KEY)}


# ---------------------------------------------------------------- timing


@dataclass
class OpTimes:
    """Seconds per operation for one store, one sample per repeat."""

    store: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    file_bytes: int = 0
    insert_p50: list[float] = field(default_factory=list)
    search_hits: int = 0

    def add(self, op: str, seconds: float) -> None:
        self.samples.setdefault(op, []).append(seconds)

    def median(self, op: str) -> float:
        return statistics.median(self.samples[op])


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def build(store: SqlStore, work: Workload) -> tuple[float, list[float], list[tuple[str, int]]]:
    """Every conversation, exchange by exchange, interleaved (like real use): total, per-exchange."""
    per_exchange: list[float] = []
    answers: list[tuple[str, int]] = []
    total_start = time.perf_counter()
    ids = [f"c{i:05d}" for i in range(len(work.conversations))]
    for i, cid in enumerate(ids):
        store.create(cid, work.system_prompts[i % 2], work.conversations[i][0].prompt)
    for turn in range(max(len(c) for c in work.conversations)):
        for cid, conv in zip(ids, work.conversations, strict=True):
            if turn < len(conv):
                seconds, answer_id = timed(store.add_exchange, cid, conv[turn])
                per_exchange.append(seconds)
                answers.append((cid, answer_id))
    return time.perf_counter() - total_start, per_exchange, answers


def run_once(kind: str, work: Workload, folder: Path, rng: random.Random, result: OpTimes) -> None:
    cls, key = STORES[kind]
    path = folder / f"{kind}.db"
    store = cls(path, key)
    total, per_exchange, answers = build(store, work)
    result.add("insert all exchanges", total)
    result.insert_p50.append(statistics.median(per_exchange))
    store.checkpoint()
    store.close()
    result.file_bytes = file_size(path)

    seconds, store = timed(cls, path, key)
    result.add("open (connect+key+schema)", seconds)
    seconds, rows = timed(store.integrity)
    assert rows == ["ok"], rows
    result.add("integrity at open", seconds)
    seconds, listed = timed(store.list)
    assert len(listed) == min(20, len(work.conversations))
    result.add("list 20 recent + counts", seconds)
    cid, answer_id = answers[rng.randrange(len(answers))]
    seconds, messages = timed(store.get, cid)
    result.add(f"get conversation ({len(messages)} msgs)", seconds)
    seconds, hits = timed(store.search, RARE_WORD)
    result.search_hits = len(hits)
    result.add("search (~1% of messages)", seconds)
    seconds, _ = timed(store.add_feedback, cid, answer_id, 1)
    result.add("feedback insert", seconds)
    store.close()


def bench(work: Workload, repeats: int, folder: Path) -> dict[str, OpTimes]:
    results = {kind: OpTimes(kind) for kind in STORES}
    for repeat in range(repeats):
        for kind in STORES:  # interleaved, so the stores share the machine's noise
            sub = folder / f"r{repeat}"
            sub.mkdir(exist_ok=True)
            run_once(kind, work, sub, random.Random(repeat), results[kind])
    return results


def print_table(results: dict[str, OpTimes], work: Workload) -> None:
    kinds = list(results)
    anchor = results["plain"]
    print(
        f"\n{len(work.conversations)} conversations, {work.messages} messages; median of "
        f"{len(anchor.samples['open (connect+key+schema)'])} repeats; ms (x plain)"
    )
    print(f"{'operation':34}" + "".join(f"{k:>22}" for k in kinds))
    ops = list(anchor.samples)
    for op in ops:
        cells = []
        for k in kinds:
            ms = results[k].median(op) * 1000
            cells.append(f"{ms:10.2f} ({ms / (anchor.median(op) * 1000):5.2f}x)")
        print(f"{op:34}" + "".join(f"{c:>22}" for c in cells))
    cells = []
    for k in kinds:
        ms = statistics.median(results[k].insert_p50) * 1000
        cells.append(f"{ms:10.3f} ({ms / (statistics.median(anchor.insert_p50) * 1000):5.2f}x)")
    print(f"{'insert one exchange (p50)':34}" + "".join(f"{c:>22}" for c in cells))
    cells = [
        f"{results[k].file_bytes / 1e6:9.2f} MB ({results[k].file_bytes / anchor.file_bytes:5.2f}x)"
        for k in kinds
    ]
    print(f"{'file size (db+wal+shm)':34}" + "".join(f"{c:>22}" for c in cells))
    print("search hits (conversations):", {k: results[k].search_hits for k in kinds})
    print(
        "(integrity at open: plain/columns PRAGMA quick_check, columns also opens every sealed value;"
        " sqlcipher PRAGMA cipher_integrity_check)"
    )


# ---------------------------------------------------------------- correctness


@dataclass
class LeakCheck:
    store: str
    moment: str
    samples: int  # how many plaintext samples were looked for
    found: dict[str, int]  # file -> how many of them appear in it


def leaks(path: Path, samples: list[str]) -> dict[str, int]:
    out = {}
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{path}{suffix}")
        data = p.read_bytes() if p.exists() else b""
        out[p.name + f" ({len(data)} B)"] = sum(s.encode() in data for s in samples)
    return out


def check_leaks(work: Workload, folder: Path) -> list[LeakCheck]:
    small = Workload(work.system_prompts, work.conversations[:60])
    out = []
    for kind, (cls, key) in STORES.items():
        path = folder / f"leak-{kind}.db"
        store = cls(path, key)
        build(store, small)
        out.append(
            LeakCheck(
                kind,
                "open, before checkpoint",
                len(small.sample_sentences()),
                leaks(path, small.sample_sentences()),
            )
        )
        store.checkpoint()
        out.append(
            LeakCheck(
                kind,
                "after wal_checkpoint(TRUNCATE)",
                len(small.sample_sentences()),
                leaks(path, small.sample_sentences()),
            )
        )
        store.close()
        out.append(
            LeakCheck(
                kind, "after close", len(small.sample_sentences()), leaks(path, small.sample_sentences())
            )
        )
    return out


@dataclass
class Outcome:
    what: str
    result: str


def describe(exc: BaseException) -> str:
    code = getattr(exc, "sqlite_errorname", None)
    return f"{type(exc).__module__}.{type(exc).__name__}: {exc}" + (f" [{code}]" if code else "")


def try_sqlcipher(path: Path, key: bytes, sql: str) -> str:
    db = sqlcipher.connect(str(path), isolation_level=None)
    try:
        db.execute("PRAGMA cipher_log_level = NONE")
        db.execute(f"PRAGMA key = {_hexkey(key)}")
        rows = db.execute(sql).fetchall()
        return f"rows: {rows[:4]}{' ...' if len(rows) > 4 else ''} ({len(rows)} rows)"
    except Exception as exc:  # noqa: BLE001 - reporting whatever it is
        return "raises " + describe(exc)
    finally:
        db.close()


_LOG_PROBE = """
import sys
from sqlcipher3 import dbapi2
db = dbapi2.connect(sys.argv[1], isolation_level=None)
if sys.argv[2]:
    db.execute(sys.argv[2])
db.execute("PRAGMA key = \\"x'" + "ff" * 32 + "'\\"")
try:
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()
except dbapi2.DatabaseError as exc:
    print(exc)
"""


def stderr_lines_on_wrong_key(path: Path, pragma: str) -> str:
    """In a fresh process (the log level is process-wide): what a wrong key writes to stderr."""
    done = subprocess.run(
        [sys.executable, "-c", _LOG_PROBE, str(path), pragma], capture_output=True, text=True, timeout=60
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return f"{len(lines)} stderr lines" + (f", e.g. {lines[0]!r}" if lines else "")


def flip_byte(src: Path, dst: Path, offset: int) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def check_sqlcipher(work: Workload, folder: Path) -> list[Outcome]:
    path = folder / "cipher.db"
    store = SqlCipherStore(path, KEY)
    build(store, Workload(work.system_prompts, work.conversations[:60]))
    store.checkpoint()
    store.close()
    size = path.stat().st_size
    out = [
        Outcome("cipher_version / settings", try_sqlcipher(path, KEY, "PRAGMA cipher_version")),
        Outcome(
            "cipher_memory_security (default)", try_sqlcipher(path, KEY, "PRAGMA cipher_memory_security")
        ),
        Outcome(
            "wrong key, first read", try_sqlcipher(path, WRONG_KEY, "SELECT count(*) FROM sqlite_master")
        ),
        Outcome(
            "wrong key, cipher_integrity_check",
            try_sqlcipher(path, WRONG_KEY, "PRAGMA cipher_integrity_check"),
        ),
        Outcome("sealed file opened with no PRAGMA key at all", try_sqlcipher_nokey(path)),
        Outcome("wrong key, stderr without silencing", stderr_lines_on_wrong_key(path, "")),
    ]
    out += [
        Outcome(f"wrong key, stderr with {p!r}", stderr_lines_on_wrong_key(path, p)) for p in LOG_SILENCERS
    ]
    out += not_a_database_cases(folder)
    for label, offset in (("middle of file", size // 2), ("page 1 (offset 100)", 100)):
        bad = folder / f"flipped-{offset}.db"
        flip_byte(path, bad, offset)
        out.append(
            Outcome(
                f"flipped byte, {label}: SELECT content FROM messages",
                try_sqlcipher(bad, KEY, "SELECT content FROM messages"),
            )
        )
        out.append(
            Outcome(
                f"flipped byte, {label}: cipher_integrity_check",
                try_sqlcipher(bad, KEY, "PRAGMA cipher_integrity_check"),
            )
        )
        out.append(
            Outcome(
                f"flipped byte, {label}: SELECT count(*) FROM conversations",
                try_sqlcipher(bad, KEY, "SELECT count(*) FROM conversations"),
            )
        )
    return out


def try_sqlcipher_nokey(path: Path) -> str:
    db = sqlcipher.connect(str(path), isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return "opens"
    except Exception as exc:  # noqa: BLE001
        return "raises " + describe(exc)
    finally:
        db.close()


def not_a_database_cases(folder: Path) -> list[Outcome]:
    """What a keyed open says for files that are not SQLCipher databases at all."""
    garbage = folder / "garbage.db"
    garbage.write_bytes(random.Random(1).randbytes(64 * 1024))
    plain = folder / "plain-notkeyed.db"
    sqlite3.connect(plain).executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    empty = folder / "empty.db"
    empty.write_bytes(b"")
    sql = "SELECT count(*) FROM sqlite_master"
    return [
        Outcome("random bytes opened with the key", try_sqlcipher(garbage, KEY, sql)),
        Outcome("plain SQLite file opened with a key", try_sqlcipher(plain, KEY, sql)),
        Outcome("empty file opened with a key", try_sqlcipher(empty, KEY, sql)),
    ]


def check_tamper_others(work: Workload, folder: Path) -> list[Outcome]:
    """The same flipped byte in the plain and the column-sealed files, for contrast."""
    out = []
    for kind in ("plain", "columns"):
        cls, key = STORES[kind]
        path = folder / f"tamper-{kind}.db"
        store = cls(path, key)
        build(store, Workload(work.system_prompts, work.conversations[:60]))
        store.checkpoint()
        store.close()
        bad = folder / f"tamper-{kind}-flipped.db"
        flip_byte(path, bad, path.stat().st_size // 2)
        try:
            store = cls(bad, key)
        except Exception as exc:  # noqa: BLE001
            out.append(Outcome(f"{kind}: flipped byte mid-file, open", "raises " + describe(exc)))
            continue
        try:
            rows = store.db.execute("SELECT count(*), sum(length(content)) FROM messages").fetchall()
            out.append(Outcome(f"{kind}: flipped byte mid-file, SELECT over messages", f"rows {rows}"))
        except Exception as exc:  # noqa: BLE001
            out.append(
                Outcome(f"{kind}: flipped byte mid-file, SELECT over messages", "raises " + describe(exc))
            )
        try:
            problems = store.integrity()
            out.append(
                Outcome(f"{kind}: flipped byte mid-file, integrity()", f"{problems[:3]} ({len(problems)})")
            )
        except Exception as exc:  # noqa: BLE001
            out.append(Outcome(f"{kind}: flipped byte mid-file, integrity()", "raises " + describe(exc)))
        store.close()
    out += flip_inside_content(work, folder)
    cls, _ = STORES["columns"]
    try:
        cls(folder / "tamper-columns.db", WRONG_KEY)
        out.append(Outcome("columns: wrong key at open", "opens (!)"))
    except Exception as exc:  # noqa: BLE001
        out.append(Outcome("columns: wrong key at open", "raises " + describe(exc)))
    return out


def flip_inside_content(work: Workload, folder: Path) -> list[Outcome]:
    """Flip a byte inside one message's stored bytes (text or ciphertext): caught, or silent?"""
    out = []
    for kind in ("plain", "columns"):
        cls, key = STORES[kind]
        path = folder / f"tamper-{kind}.db"
        store = cls(path, key)
        stored = store.db.execute("SELECT content FROM messages WHERE id = 6").fetchone()[0]
        store.close()
        raw = stored.encode() if isinstance(stored, str) else stored
        offset = path.read_bytes().find(raw) + len(raw) // 2
        bad = folder / f"tamper-{kind}-content.db"
        flip_byte(path, bad, offset)
        store = cls(bad, key)
        try:
            text = store.get(
                store.db.execute("SELECT conversation_id FROM messages WHERE id = 6").fetchone()[0]
            )
            changed = [m for m in text if m[0] == 6][0][2] != work_text(work, 6)
            result = f"get() returns the message, altered: {changed}; integrity(): {store.integrity()[:2]}"
        except Exception as exc:  # noqa: BLE001
            result = f"get() raises {describe(exc)}; integrity(): {store.integrity()[:2]}"
        store.close()
        out.append(Outcome(f"{kind}: flipped byte inside message 6's content", result))
    return out


def work_text(work: Workload, message_id: int) -> str:
    """Message ``message_id`` as build() stores it (turn by turn across conversations)."""
    index = message_id - 1
    exchange_index, is_answer = divmod(index, 2)
    turn, conv = divmod(exchange_index, len(work.conversations))
    ex = work.conversations[conv][turn]
    return ex.answer if is_answer else ex.prompt


# ---------------------------------------------------------------- migration


@dataclass
class Migration:
    messages: int
    export_seconds: float
    plain_bytes: int
    sealed_bytes: int
    user_version: tuple[int, int]
    tables_match: bool
    cipher_integrity: list[str]


def table_digest(db, table: str) -> str:
    digest = hashlib.sha256()
    for row in db.execute(f"SELECT * FROM {table} ORDER BY rowid"):
        digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


TABLES = ("conversations", "messages", "feedback", "sqlite_sequence")


def migrate_plain_to_sqlcipher(plain: Path, sealed: Path, key: bytes) -> float:
    """Open the plain file with sqlcipher3 and no key, ATTACH a keyed one, sqlcipher_export."""
    start = time.perf_counter()
    db = sqlcipher.connect(str(plain), isolation_level=None)
    db.execute(f"ATTACH DATABASE ? AS sealed KEY {_hexkey(key)}", (str(sealed),))
    db.execute("SELECT sqlcipher_export('sealed')")
    version = db.execute("PRAGMA main.user_version").fetchone()[0]
    db.execute(f"PRAGMA sealed.user_version = {int(version)}")
    db.execute("DETACH DATABASE sealed")
    db.close()
    return time.perf_counter() - start


def check_migration(work: Workload, folder: Path) -> Migration:
    plain = folder / "migrate-plain.db"
    store = SqlStore(plain)
    _, _, answers = build(store, work)
    for cid, answer_id in answers[:: max(1, len(answers) // 20)]:
        store.add_feedback(cid, answer_id, 1)
    store.checkpoint()
    store.close()
    sealed = folder / "migrate-sealed.db"
    seconds = migrate_plain_to_sqlcipher(plain, sealed, KEY)

    src = sqlite3.connect(plain)
    opened = SqlCipherStore(sealed, KEY)  # the real open path: key, WAL, migrations (none to run)
    match = all(table_digest(src, t) == table_digest(opened.db, t) for t in TABLES)
    versions = (
        src.execute("PRAGMA user_version").fetchone()[0],
        opened.db.execute("PRAGMA user_version").fetchone()[0],
    )
    integrity = opened.integrity()
    journal = opened.db.execute("PRAGMA journal_mode").fetchone()[0]
    opened.close()
    src.close()
    assert journal == "wal"
    return Migration(
        work.messages, seconds, plain.stat().st_size, sealed.stat().st_size, versions, match, integrity
    )


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--exchanges", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = make_workload(args.conversations, args.exchanges)
    rare = sum((RARE_WORD in e.prompt) + (RARE_WORD in e.answer) for c in work.conversations for e in c)
    print(f"workload: {work.messages} messages, {rare / work.messages:.1%} of them contain {RARE_WORD!r}")
    with tempfile.TemporaryDirectory(prefix="sealed-sqlite-") as tmp:
        folder = Path(tmp)
        results = bench(work, args.repeats, folder)
        print_table(results, work)

        leak_checks = check_leaks(work, folder)
        print(f"\nplaintext samples found in the files (of {leak_checks[0].samples} looked for, per file):")
        for c in leak_checks:
            print(f"  {c.store:10} {c.moment:32} {c.found}")

        outcomes = check_sqlcipher(work, folder) + check_tamper_others(work, folder)
        print("\nerrors, logs, tamper:")
        for o in outcomes:
            print(f"  {o.what:62} {o.result}")

        migration = check_migration(work, folder)
        print(
            f"\nmigration plain -> SQLCipher (ATTACH ... KEY; sqlcipher_export; user_version): "
            f"{migration.messages} messages in {migration.export_seconds * 1000:.0f} ms; "
            f"{migration.plain_bytes / 1e6:.2f} MB -> {migration.sealed_bytes / 1e6:.2f} MB; "
            f"user_version {migration.user_version}; tables match: {migration.tables_match}; "
            f"cipher_integrity_check: {migration.cipher_integrity}"
        )

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "conversations": args.conversations,
                    "exchanges": args.exchanges,
                    "repeats": args.repeats,
                    "sqlcipher": sqlcipher.sqlite_version,
                    "results": {k: asdict(v) for k, v in results.items()},
                    "leaks": [asdict(c) for c in leak_checks],
                    "outcomes": [asdict(o) for o in outcomes],
                    "migration": asdict(migration),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
