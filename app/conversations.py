"""Conversations persisted in SQLite in the data home, so a chat survives a restart."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from app.atomic import fsync_directory
from app.chat_template import ChatMessage
from app.errors import LanternError

# Numbered schema migrations; PRAGMA user_version records how many have run.
MIGRATIONS = [
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        model TEXT NOT NULL,
        system_prompt TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        created_at TEXT NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER
    );
    CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
    """,
    # Feedback on answers, kept as preference data for the twin's later preference tuning.
    """
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        prompt TEXT NOT NULL,
        chosen TEXT,
        rejected TEXT,
        rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
        created_at TEXT NOT NULL
    );
    CREATE INDEX feedback_by_message ON feedback (message_id);
    """,
    # Which model wrote each answer (a conversation may switch to a twin), and the passages it cited.
    """
    ALTER TABLE messages ADD COLUMN model TEXT;
    ALTER TABLE messages ADD COLUMN citations TEXT;
    """,
    # How each answer ended: "stop", "length", "cancelled", or "cut" (a remote engine's stream broke
    # off and the text is partial). NULL for answers stored before this column.
    """
    ALTER TABLE messages ADD COLUMN finish TEXT;
    """,
]


@dataclass(frozen=True)
class StoredMessage:
    role: str
    content: str
    created_at: str
    id: int | None = None
    model: str | None = None  # the answer's model; None for the user's turns and older answers
    citations: list[dict] = field(default_factory=list)  # the passages an answer drew on
    finish: str | None = None  # how the answer ended; "cut": it is partial (the engine broke off)

    @property
    def is_cut(self) -> bool:
        return self.finish == "cut"


@dataclass(frozen=True)
class PreferencePair:
    """One judgement of an answer: ``prompt`` is the chat (JSON) that led to it. A thumbs-up has
    only ``chosen``, a thumbs-down only ``rejected``, an edit both (the edit is chosen)."""

    conversation_id: str
    message_id: int
    prompt: list[dict]
    chosen: str | None
    rejected: str | None
    rating: int
    created_at: str


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    model: str
    system_prompt: str
    created_at: str
    updated_at: str
    messages: list[StoredMessage] = field(default_factory=list)

    def chat_messages(self) -> list[ChatMessage]:
        """System prompt then every turn, ready for the engine."""
        system = [ChatMessage("system", self.system_prompt)] if self.system_prompt else []
        return system + [ChatMessage(m.role, m.content) for m in self.messages]


def _sqlcipher():
    from sqlcipher3 import dbapi2

    return dbapi2


def _unlock(db, key: bytes) -> None:
    # The key must be the first statement on the connection; logging off keeps SQLCipher's own
    # complaints about a damaged page off the user's terminal (Lantern names the file instead).
    db.execute("PRAGMA cipher_log_level = NONE")
    db.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()


def _check_pages(db, path: Path) -> None:
    """Every page's HMAC, checked at open, so a flipped byte anywhere is named now, not later."""
    problems = [row[0] for row in db.execute("PRAGMA cipher_integrity_check")]
    if problems:
        raise LanternError(
            f"the conversation store {path} is damaged or was altered ({problems[0]}); move it aside "
            f"(mv {path} {path}.broken) and Lantern starts a new one"
        )


def seal_database(path: Path, key: bytes) -> None:
    """Rewrite the plain database at ``path`` encrypted with ``key``, atomically: the sealed copy
    is built beside it and renamed over it, so a kill leaves one or the other, whole."""
    staging = path.with_name(path.name + ".sealing")
    staging.unlink(missing_ok=True)
    plain = _sqlcipher().connect(path, isolation_level=None)
    try:
        version = plain.execute("PRAGMA user_version").fetchone()[0]
        plain.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        plain.execute(f"ATTACH DATABASE ? AS sealed KEY \"x'{key.hex()}'\"", (str(staging),))
        plain.execute("SELECT sqlcipher_export('sealed')")
        plain.execute(f"PRAGMA sealed.user_version = {int(version)}")
        plain.execute("DETACH DATABASE sealed")
    finally:
        plain.close()
    os.chmod(staging, 0o600)
    with open(staging, "rb") as f:
        os.fsync(f.fileno())
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    os.replace(staging, path)
    fsync_directory(path.parent)


def is_plain_database(path: Path) -> bool:
    """A plain SQLite file starts with its format string; a SQLCipher one with random salt."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def new_conversation_id() -> str:
    return secrets.token_hex(6)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _title_from(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= 60 else line[:57] + "..."


class ConversationStore:
    """``key``: the SQLCipher key when the data home is encrypted (the whole database, its WAL
    included, is then AES-256 encrypted page by page with an HMAC on each page)."""

    def __init__(self, path: Path, key: bytes | None = None):
        self.path = Path(path)
        self.sealed = key is not None
        driver = _sqlcipher() if self.sealed else sqlite3
        self.db = driver.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = driver.Row
        try:
            if key is not None:
                _unlock(self.db, key)
                _check_pages(self.db, self.path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except driver.DatabaseError as exc:
            self.db.close()
            raise LanternError(
                f"the conversation store {self.path} is damaged or was altered ({exc}); move it "
                f"aside (mv {self.path} {self.path}.broken) and Lantern starts a new one"
            ) from None
        except LanternError:
            self.db.close()
            raise

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise LanternError(
                f"{self.path} was written by a newer Lantern (schema {version}); upgrade Lantern"
            )
        for number in range(version, len(MIGRATIONS)):
            self.db.executescript(f"BEGIN; {MIGRATIONS[number]} PRAGMA user_version = {number + 1}; COMMIT;")

    def close(self) -> None:
        self.db.close()

    def create(
        self, model: str, system_prompt: str, first_prompt: str, *, conversation_id: str | None = None
    ) -> Conversation:
        """A new conversation; ``conversation_id`` one from new_conversation_id (told to a client
        before anything is stored)."""
        now = _now()
        conversation = Conversation(
            id=conversation_id or new_conversation_id(),
            title=_title_from(first_prompt),
            model=model,
            system_prompt=system_prompt,
            created_at=now,
            updated_at=now,
        )
        self.db.execute(
            "INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?)",
            (conversation.id, conversation.title, model, system_prompt, now, now),
        )
        return conversation

    def add_exchange(
        self,
        conversation_id: str,
        prompt: str,
        answer: str,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        *,
        model: str | None = None,
        citations: list[dict] | None = None,
        replace_last: bool = False,
        finish: str | None = None,
    ) -> int:
        """Store a user turn and its answer together: both or neither. ``replace_last``: they take
        the place of the conversation's last exchange (a regenerated or edited last turn), in the
        same transaction, so a failed answer never loses the old one. Returns the answer's id."""
        now = _now()
        with self.db:
            self.db.execute("BEGIN")
            if replace_last:
                self._delete_last_exchange(conversation_id)
            self.db.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at, prompt_tokens)"
                " VALUES (?, 'user', ?, ?, ?)",
                (conversation_id, prompt, now, prompt_tokens),
            )
            answer_id = self.db.execute(
                "INSERT INTO messages"
                " (conversation_id, role, content, created_at, completion_tokens, model, citations, finish)"
                " VALUES (?, 'assistant', ?, ?, ?, ?, ?, ?)",
                (conversation_id, answer, now, completion_tokens, model, json.dumps(citations or []), finish),
            ).lastrowid
            self.db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
        return answer_id

    def record_exchange(
        self,
        conversation: Conversation | None,
        model: str,
        system_prompt: str,
        prompt: str,
        answer: str,
        *,
        conversation_id: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        citations: list[dict] | None = None,
        replace_last: bool = False,
        finish: str | None = None,
    ) -> tuple[Conversation, int]:
        """One answered turn, as every front end stores it: a new conversation is created on its
        first exchange (under ``conversation_id`` if that was already told to a client), a
        continued one follows a switch of model. Returns the conversation and the answer's id."""
        if conversation is None:
            conversation = self.create(model, system_prompt, prompt, conversation_id=conversation_id)
        elif conversation.model != model:
            self.set_model(conversation.id, model)
            conversation = replace(conversation, model=model)
        answer_id = self.add_exchange(
            conversation.id,
            prompt,
            answer,
            prompt_tokens,
            completion_tokens,
            model=model,
            citations=citations,
            replace_last=replace_last,
            finish=finish,
        )
        return conversation, answer_id

    def _delete_last_exchange(self, conversation_id: str) -> None:
        last = self.db.execute(
            "SELECT id, role FROM messages WHERE conversation_id = ? ORDER BY id DESC LIMIT 2",
            (conversation_id,),
        ).fetchall()
        if [r["role"] for r in last] != ["assistant", "user"]:
            raise LanternError(f"conversation {conversation_id!r} has no exchange to replace")
        self.db.execute("DELETE FROM messages WHERE id IN (?, ?)", (last[0]["id"], last[1]["id"]))

    def set_model(self, conversation_id: str, model: str) -> None:
        """The model the conversation continues with (a user may switch to a twin mid-way)."""
        self.db.execute("UPDATE conversations SET model = ? WHERE id = ?", (model, conversation_id))

    def get(self, conversation_id: str) -> Conversation:
        row = self.db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise LanternError(f"no conversation {conversation_id!r}; list them with 'lantern conversations'")
        messages = [
            StoredMessage(
                r["role"],
                r["content"],
                r["created_at"],
                r["id"],
                r["model"],
                json.loads(r["citations"] or "[]"),
                r["finish"],
            )
            for r in self.db.execute(
                "SELECT id, role, content, created_at, model, citations, finish FROM messages"
                " WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            )
        ]
        return Conversation(**{k: row[k] for k in row.keys()}, messages=messages)

    def latest(self) -> Conversation | None:
        row = self.db.execute(
            "SELECT id FROM conversations ORDER BY updated_at DESC, rowid DESC LIMIT 1"
        ).fetchone()
        return self.get(row["id"]) if row else None

    def list(self, limit: int = 20) -> list[tuple[Conversation, int]]:
        """The most recently used conversations with their message counts (messages not loaded)."""
        rows = self.db.execute(
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n"
            " FROM conversations c ORDER BY updated_at DESC, rowid DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [(Conversation(**{k: r[k] for k in r.keys() if k != "n"}), r["n"]) for r in rows]

    def delete(self, conversation_id: str) -> None:
        if self.db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount == 0:
            raise LanternError(f"no conversation {conversation_id!r}")

    def rename(self, conversation_id: str, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            raise LanternError("a conversation title cannot be empty")
        if (
            self.db.execute(
                "UPDATE conversations SET title = ? WHERE id = ?", (title[:200], conversation_id)
            ).rowcount
            == 0
        ):
            raise LanternError(f"no conversation {conversation_id!r}")

    def search(self, text: str, limit: int = 50) -> list[tuple[Conversation, int]]:
        """Conversations whose title or any message contains ``text`` (case-insensitive)."""
        if not text.strip():
            return self.list(limit)
        pattern = "%" + text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.db.execute(
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n"
            " FROM conversations c WHERE c.title LIKE ?1 ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m"
            " WHERE m.conversation_id = c.id AND m.content LIKE ?1 ESCAPE '\\')"
            " ORDER BY updated_at DESC, rowid DESC LIMIT ?2",
            (pattern, limit),
        ).fetchall()
        return [(Conversation(**{k: r[k] for k in r.keys() if k != "n"}), r["n"]) for r in rows]

    def add_feedback(
        self, conversation_id: str, message_id: int, rating: int, edited: str | None = None
    ) -> PreferencePair:
        """Record a thumbs up (+1) or down (-1) on an answer; an ``edited`` answer is preferred
        over the original, which makes a full preference pair."""
        if rating not in (-1, 1):
            raise LanternError("feedback is +1 or -1")
        conversation = self.get(conversation_id)
        ids = [m.id for m in conversation.messages]
        if message_id not in ids or conversation.messages[ids.index(message_id)].role != "assistant":
            raise LanternError("feedback goes on an answer of this conversation")
        position = ids.index(message_id)
        prompt = [
            {"role": m.role, "content": m.content}
            for m in conversation.chat_messages()[: position + (1 if conversation.system_prompt else 0)]
        ]
        answer = conversation.messages[position].content
        if edited is not None:
            chosen, rejected, rating = edited, answer, -1
        else:
            chosen, rejected = (answer, None) if rating > 0 else (None, answer)
        now = _now()
        with self.db:
            self.db.execute("BEGIN")
            # A change of mind replaces the earlier judgement of the same kind: thumbs replace
            # thumbs (up, then down), an edit replaces an earlier edit; a thumb and an edit coexist.
            edits = "chosen IS NOT NULL AND rejected IS NOT NULL"
            kind = edits if edited is not None else f"NOT ({edits})"
            self.db.execute(f"DELETE FROM feedback WHERE message_id = ? AND {kind}", (message_id,))
            self.db.execute(
                "INSERT INTO feedback"
                " (conversation_id, message_id, prompt, chosen, rejected, rating, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, message_id, json.dumps(prompt), chosen, rejected, rating, now),
            )
        return PreferencePair(conversation_id, message_id, prompt, chosen, rejected, rating, now)

    def preference_pairs(self) -> list[PreferencePair]:
        return [
            PreferencePair(
                r["conversation_id"],
                r["message_id"],
                json.loads(r["prompt"]),
                r["chosen"],
                r["rejected"],
                r["rating"],
                r["created_at"],
            )
            for r in self.db.execute("SELECT * FROM feedback ORDER BY id")
        ]
