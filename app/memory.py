"""The assistant's memory: the rag store, opened with the user's key, and the passages for a prompt."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.bundled import bundled_model_path
from app.config import MemoryConfig
from app.conversations import Conversation
from app.errors import LanternError
from rag.crypto import Cipher
from rag.embedder import TUNED_MARK, Embedder, SentenceTransformerEmbedder, base_embedder_name
from rag.errors import MemoryStoreError, WrongKeyError
from rag.ingest import Ingester, Progress, SyncReport
from rag.rerank import LlmJudgeReranker, MaxSimReranker, Reranker, RerankStage, TokenEmbedder
from rag.retrieval import Mode, RetrievalHit, Retriever
from rag.store import KeySource, MemoryStore
from rag.tuning import (
    MIN_NOTES,
    MIN_PAIRS,
    TrainingProgress,
    TuneReport,
    TuneSettings,
    make_pairs,
    score_pairs,
    split_by_note,
    train,
)

CONVERSATIONS_ROOT = "lantern:conversations"  # a root with no folder behind it; sync leaves it alone
NOTES_ROOT = "lantern:notes"  # notes sent from a phone
_EMBEDDER_LOCK = threading.Lock()


def _resolve(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # e.g. ~nosuchuser
        raise MemoryStoreError(f"cannot use the path {path}: {exc}") from None


@dataclass(frozen=True)
class MemoryContext:
    """Passages chosen for one prompt, and the prompt text that carries them."""

    hits: list[RetrievalHit]
    prompt: str


class Memory:
    def __init__(
        self,
        directory: Path,
        config: MemoryConfig,
        keys: KeySource | None,
        embedder: Embedder | None = None,
    ):
        """``keys``: the data home's key (app/home_key.HomeKey), asked for on first use; None
        for a memory that is never encrypted (benchmarks, tests)."""
        self.directory = directory
        self.config = config
        self._keys = keys
        self._store: MemoryStore | None = None
        self._embedder = embedder  # loaded on first use when not given
        self._reranker: Reranker | None = None  # config.rerank's, loaded on the first search
        self._tuned: dict[str, Embedder] = {}  # tuned embedders by name, loaded from the store

    @property
    def store(self) -> MemoryStore:
        if self._store is None:
            self._store = self._open()
        return self._store

    def _open(self) -> MemoryStore:
        try:
            return MemoryStore.open(self.directory, self._keys, self.config.ivfpq_above)
        except WrongKeyError:
            if self._keys is not None:
                self._keys.forget()
            raise

    @contextlib.contextmanager
    def _writer(self) -> Iterator[MemoryStore]:
        """A store view of its own for one write, so searches running meanwhile (the TUI) keep a
        consistent view; they see the result once it is committed."""
        store = self._open()
        with store.writing():
            yield store
        self._store = store

    @property
    def embedder(self) -> Embedder:
        """The configured embedder (the bundled one by default), as it is before any tuning."""
        with _EMBEDDER_LOCK:
            return self._load_embedder()

    def _embedder_for(self, store: MemoryStore) -> Embedder:
        """The embedder the store's vectors come from: the configured one, or a tune of it."""
        base = self.embedder
        name = store.embedder_name
        if TUNED_MARK not in name or base_embedder_name(name) != base.name:
            return base  # bind_embedder refuses a mismatch with a clear message
        with _EMBEDDER_LOCK:
            if name not in self._tuned:
                self._tuned[name] = _tunable(base).with_weights(store.read_embedder_weights(), name)
            return self._tuned[name]

    def _load_embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = SentenceTransformerEmbedder(
                Path(self.config.embedder).expanduser() if self.config.embedder else None
            )
        return self._embedder

    def is_encrypted(self) -> bool:
        return MemoryStore.is_encrypted(self.directory)

    def has_notes(self) -> bool:
        """True when there is something to retrieve (without unlocking or loading anything big)."""
        return MemoryStore.exists(self.directory) and self.store.chunk_count > 0

    def seal(self, cipher: Cipher) -> MemoryStore:
        """Seal the memory with the data home's key (part of ``lantern init --encrypt``)."""
        self._store = MemoryStore.seal(self.directory, cipher)
        return self._store

    def add(self, paths: list[Path], progress: Progress | None = None) -> SyncReport:
        with self._writer() as store:
            return Ingester(store, self._embedder_for(store), progress).add(paths)

    def sync(self, progress: Progress | None = None) -> SyncReport:
        with self._writer() as store:
            return Ingester(store, self._embedder_for(store), progress).sync()

    def forget(self, path: Path) -> int:
        text = str(path)
        target = text if text.startswith("lantern:") else str(_resolve(path))
        with self._writer() as store:
            removed = store.forget(target)
            if not removed and not store.roots_forgotten and target not in store.forgotten:
                raise MemoryStoreError(f"nothing from {path} is in memory; see 'lantern memory list'")
            store.commit()
        return len(removed)

    def remember_chat(self, conversation: Conversation) -> int:
        """Save a conversation into memory as a note; returns the number of chunks."""
        # Question and answer stay together in one section, so a passage carries both.
        lines = [f"# Conversation: {conversation.title}", ""]
        exchange = 0
        for message in conversation.messages:
            if message.role == "user":
                exchange += 1
                lines += [f"## Exchange {exchange}", ""]
            if message.role != "system":
                lines += [f"{message.role.capitalize()}: {message.content}", ""]
        with self._writer() as store:
            ingester = Ingester(store, self._embedder_for(store))
            return ingester.add_text(
                key=f"{CONVERSATIONS_ROOT}/{conversation.id}",
                root=CONVERSATIONS_ROOT,
                relative=f"conversations/{conversation.id}.md",
                text="\n".join(lines),
            )

    def add_note(self, title: str, text: str) -> int:
        """A note written on the phone: kept in memory under notes/<title>.md; returns its chunks."""
        safe = "".join(c if c.isalnum() or c in "-_ " else "-" for c in title).strip() or "note"
        with self._writer() as store:
            return Ingester(store, self._embedder_for(store)).add_text(
                key=f"{NOTES_ROOT}/{safe}",
                root=NOTES_ROOT,
                relative=f"notes/{safe}.md",
                text=f"# {title}\n\n{text}",
            )

    def search(
        self,
        query: str,
        k: int = 5,
        mode: Mode = "hybrid",
        per_note: int | None = None,
        expansion: str = "",
    ) -> list[RetrievalHit]:
        """``per_note``: passages of one note at most (0: no limit); None: the configured value.
        ``expansion``: a drafted answer searched for beside the query (HyDE)."""
        if k < 1:
            raise LanternError("--k must be at least 1")
        per_note = self.config.per_note if per_note is None else per_note
        if per_note < 0:
            raise LanternError("--per-note must be 0 (no limit) or more")
        if not MemoryStore.exists(self.directory):
            return []
        store = self.store.load()  # the generation first: it says which embedder to use
        retriever = Retriever(store, self._embedder_for(store), rerank=self._rerank_stage())
        return retriever.search(query, k, mode, per_note, expansion)

    def _rerank_stage(self) -> RerankStage | None:
        if self.config.rerank == "off":
            return None
        with _EMBEDDER_LOCK:
            if self._reranker is None:
                self._reranker = self._load_reranker()
        return RerankStage(self._reranker, self.config.rerank_depth, self.config.rerank_weight)

    def _load_reranker(self) -> Reranker:
        if self.config.rerank == "judge":
            model = bundled_model_path()
            if model is None:
                raise LanternError(
                    "memory.rerank = \"judge\" needs the bundled chat model; run 'make install'"
                )
            return LlmJudgeReranker(model)
        embedder = self._load_embedder()
        if not isinstance(embedder, TokenEmbedder):
            raise LanternError('memory.rerank = "maxsim" needs a sentence-transformers embedder')
        return MaxSimReranker(embedder)

    def tune(
        self,
        settings: TuneSettings,
        on_step: TrainingProgress | None = None,
        on_encode: Progress | None = None,
    ) -> TuneReport:
        """Train a copy of the embedder on pairs from the notes; adopt it only if it finds the
        held-out pairs better than the embedder in use. Nothing changes until the final commit."""
        store = self._open().load()  # a view of its own: searches meanwhile use the one they have
        pairs = make_pairs((chunk, store.files[chunk.path].relative) for chunk in store.chunks())
        training, held_out = split_by_note(pairs, settings.held_out_share, settings.seed)
        notes = {p.note for p in pairs}
        if len(notes) < MIN_NOTES or len(pairs) < MIN_PAIRS:
            raise MemoryStoreError(
                f"too little to tune on: {len(pairs)} pairs from {len(notes)} notes (at least "
                f"{MIN_PAIRS} pairs from {MIN_NOTES} notes); add notes with headings first"
            )
        current = self._embedder_for(store)
        before = score_pairs(current.embed, held_out, pairs)
        tuned, steps = train(_tunable(self.embedder), training, settings, on_step)
        after = score_pairs(tuned.embed, held_out, pairs)
        adopted = after.mrr > before.mrr
        reencoded = 0
        if adopted:
            with self._writer() as writer:
                if writer.embedder_name != store.embedder_name:
                    raise MemoryStoreError(
                        "the memory changed embedder while tuning (another tune or a rollback); "
                        "run 'lantern memory tune' again"
                    )
                reencoded = Ingester(writer, tuned, on_encode).reencode(tuned.weights())
            self._tuned[tuned.name] = tuned
        return TuneReport(
            pairs=len(pairs),
            held_out_pairs=len(held_out),
            notes=len(notes),
            held_out_notes=len({p.note for p in held_out}),
            steps=steps,
            before=before,
            after=after,
            adopted=adopted,
            embedder=tuned.name if adopted else store.embedder_name,
            reencoded=reencoded,
        )

    def rollback_tune(self, on_encode: Progress | None = None) -> int:
        """Go back to the embedder the tune started from: every passage embedded again with it, the
        tuned weights removed by the commit. Returns the passages embedded."""
        with self._writer() as store:
            if TUNED_MARK not in store.embedder_name:
                raise MemoryStoreError(
                    f"the memory uses {store.embedder_name or 'no embedder yet'}, not a tuned one; "
                    "nothing to roll back"
                )
            base = self.embedder
            if base_embedder_name(store.embedder_name) != base.name:
                raise MemoryStoreError(
                    f"the memory was tuned from {base_embedder_name(store.embedder_name)}, but "
                    f"memory.embedder is {base.name}; set it back to roll back"
                )
            return Ingester(store, base, on_encode).reencode()

    def context_for(
        self,
        question: str,
        count_tokens: Callable[[str], int],
        expand: Callable[[str], str] | None = None,
    ) -> MemoryContext | None:
        """The question wrapped with the best passages that fit the token budget, or None.
        ``expand`` drafts an answer to search with as well (memory.hyde)."""
        expansion = expand(question) if expand is not None and self.config.hyde else ""
        hits = self.search(question, self.config.top_k, expansion=expansion)
        if not hits:
            return None
        budget, used, chosen, blocks = self.config.context_tokens, 0, [], []
        for hit in hits:
            if hit.similarity is not None and hit.similarity < self.config.min_similarity:
                continue  # the best of the notes can still be unrelated to the question
            block = f"[{len(chosen) + 1}] {cite(hit)}\n{hit.text}"
            cost = count_tokens(block)
            if used + cost > budget:
                continue
            chosen.append(hit)
            blocks.append(block)
            used += cost
        if not chosen:
            return None
        prompt = (
            "Passages from my notes:\n\n" + "\n\n".join(blocks) + f"\n\nUsing these notes, answer: {question}"
        )
        return MemoryContext(chosen, prompt)


def _tunable(embedder: Embedder) -> SentenceTransformerEmbedder:
    if not isinstance(embedder, SentenceTransformerEmbedder):
        raise MemoryStoreError(
            f"the embedder {embedder.name} cannot be tuned (not a sentence-transformers model)"
        )
    return embedder


def cite(hit: RetrievalHit) -> str:
    return f"{hit.source} › {hit.heading}" if hit.heading else hit.source


def citation_record(hit: RetrievalHit) -> dict:
    """A cited passage as the API returns it and the conversation store keeps it."""
    return {
        "source": hit.source,
        "heading": hit.heading,
        "text": hit.text,
        "score": hit.score,
        "cite": cite(hit),
    }
