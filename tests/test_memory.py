"""Memory over a user's notes, with the real MiniLM embedder and real FAISS: add, search with
citations, sync after edits, forget, and the files memory must skip without crashing."""

from __future__ import annotations

import shutil
import time

import pytest

from app.config import MemoryConfig
from app.memory import Memory
from rag.dense import DenseIndex
from rag.store import MemoryStore
from tests.memory_fixtures import FACTS, SUPPORTED_NOTES, UNREADABLE, UNSUPPORTED, make_notes


@pytest.fixture
def notes(tmp_path):
    return make_notes(tmp_path / "notes")


@pytest.fixture
def memory(tmp_path, embedder):
    return Memory(tmp_path / "home" / "memory", MemoryConfig(), None, embedder)


def _sources(hits):
    return [hit.source for hit in hits]


def test_adding_a_folder_indexes_every_format_and_counts_what_it_skipped(memory, notes):
    report = memory.add([notes])

    assert report.added == SUPPORTED_NOTES + 1  # the empty note is recorded too, with no chunks
    assert report.empty == 1
    assert report.skipped_unsupported == UNSUPPORTED
    skipped = {path.rsplit("/", 1)[-1]: reason for path, reason in report.skipped_unreadable}
    assert set(skipped) == {"broken.pdf", "binary.txt", "dangling.md"} and len(skipped) == UNREADABLE
    assert "PDF" in skipped["broken.pdf"] and "binary" in skipped["binary.txt"]

    for name, fact in FACTS.items():
        top = memory.search(fact, k=1)[0]
        assert top.source.endswith(name), (name, _sources(memory.search(fact, k=3)))
        assert fact.split()[1] in top.text


def test_hits_cite_the_file_relative_to_its_root_and_the_heading_path(memory, notes):
    memory.add([notes])
    hit = memory.search("what is the lighthouse made of", k=1)[0]
    assert hit.source == "travel/trip.md"
    assert hit.heading == "Brittany › Lighthouses"
    org = memory.search("how much sun do the tomatoes need", k=1)[0]
    assert (org.source, org.heading) == ("home/garden.org", "Garden › Balcony › Tomatoes")
    html = memory.search("what flour feeds the sourdough starter", k=1)[0]
    assert (html.source, html.heading) == ("home/recipes.html", "Baking › Bread")
    assert "secret" not in html.text  # script contents are not notes
    pdf = memory.search("who services the boiler", k=1)[0]
    assert (pdf.source, pdf.heading) == ("home/scan.pdf", "page 1")


def test_one_long_note_cannot_crowd_the_others_out_of_the_results(memory, tmp_path):
    folder = tmp_path / "bikes"
    folder.mkdir()
    sections = [
        f"## Ride {n}\n\nThe bicycle chain was cleaned and oiled after ride {n} through the hills."
        for n in range(8)
    ]
    (folder / "logbook.md").write_text("# Bicycle logbook\n\n" + "\n\n".join(sections) + "\n")
    (folder / "shop.md").write_text("# Shop\n\nThe bike shop sells chain oil and cleans bicycles.\n")
    memory.add([folder])
    assert memory.store.chunk_count >= 8

    hits = memory.search("cleaning and oiling the bicycle chain", k=4)
    assert _sources(hits) == ["logbook.md", "shop.md"]  # one passage per note: two notes, two hits

    everything = memory.search("cleaning and oiling the bicycle chain", k=4, per_note=0)
    assert len(everything) == 4 and _sources(everything).count("logbook.md") >= 3
    two_each = memory.search("cleaning and oiling the bicycle chain", k=4, per_note=2)
    assert sorted(_sources(two_each)) == ["logbook.md", "logbook.md", "shop.md"]
    plain_dense = memory.search("cleaning and oiling the bicycle chain", k=4, mode="dense")
    assert _sources(plain_dense).count("logbook.md") >= 3  # the single-method baselines stay plain


def test_sync_reembeds_only_the_edited_note(memory, notes):
    memory.add([notes])
    trip = notes / "travel" / "trip.md"
    trip.write_text("# Brittany\n\n## Lighthouses\n\nThe lighthouse keeper now paints it sea green.\n")

    report = memory.sync()

    assert (report.updated, report.added, report.removed) == (1, 0, 0)
    assert report.chunks_added == 1
    assert report.unchanged == SUPPORTED_NOTES  # the other notes (and the empty one) were not re-embedded
    texts = [hit.text for hit in memory.search("lighthouse granite", k=10)]
    assert not any("pink granite" in t for t in texts)
    assert memory.search("what colour does the keeper paint the lighthouse", k=1)[0].text.endswith(
        "sea green."
    )


def test_sync_drops_a_deleted_note_and_follows_a_renamed_one(memory, notes):
    memory.add([notes])
    before = memory.store.chunk_count
    (notes / "home" / "tools.txt").unlink()
    (notes / "home" / "garden.org").rename(notes / "home" / "balcony-garden.org")

    report = memory.sync()

    assert report.removed == 2 and report.added == 1
    everything = memory.search("tomatoes grinder eye shield sun", k=50)
    assert "home/tools.txt" not in _sources(everything)
    assert "home/garden.org" not in _sources(everything)
    assert memory.search("how much sun do the tomatoes need", k=1)[0].source == "home/balcony-garden.org"
    assert memory.store.chunk_count == before - 1  # tools.txt had one chunk; the garden kept its two


def test_an_unchanged_touch_is_not_reembedded(memory, notes):
    memory.add([notes])
    trip = notes / "travel" / "trip.md"
    trip.write_bytes(trip.read_bytes())  # new mtime, same content
    report = memory.sync()
    assert report.chunks_added == 0 and report.updated == 0


def test_forget_removes_every_chunk_and_vector_of_a_file_and_sync_keeps_it_out(memory, notes):
    memory.add([notes])
    count_before = memory.store.chunk_count
    trip_chunks = len(memory.store.files[str(notes / "travel" / "trip.md")].chunk_ids)

    assert memory.forget(notes / "travel" / "trip.md") == 1

    store = MemoryStore.open(memory.directory)  # as a new process would see it
    assert store.chunk_count == count_before - trip_chunks
    assert len(store.dense) == store.chunk_count and len(store.lexical) == store.chunk_count
    assert "travel/trip.md" not in _sources(memory.search("lighthouse pink granite Brittany", k=50))
    memory.sync()
    assert "travel/trip.md" not in _sources(memory.search("lighthouse pink granite Brittany", k=50))
    memory.add([notes / "travel" / "trip.md"])  # adding it again brings it back
    assert memory.search("lighthouse pink granite", k=1)[0].source == "travel/trip.md"


def test_forgetting_something_never_added_is_a_clear_error(memory, notes, tmp_path):
    memory.add([notes])
    with pytest.raises(Exception, match="nothing from .* is in memory"):
        memory.forget(tmp_path / "elsewhere")


def test_memory_survives_a_restart(memory, notes, tmp_path, embedder):
    memory.add([notes])
    reopened = Memory(memory.directory, MemoryConfig(), None, embedder)
    assert reopened.search(FACTS["garden.org"], k=1)[0].source == "home/garden.org"


def test_a_large_memory_switches_to_hnsw_and_records_it(memory, notes, monkeypatch):
    """Above the exact-search limit the index becomes HNSW; the limit is lowered to keep this fast."""
    monkeypatch.setattr("rag.dense.EXACT_LIMIT", 4)
    memory.add([notes])
    store = MemoryStore.open(memory.directory)
    assert store.index_description["kind"] == "hnsw"
    assert memory.search(FACTS["tools.txt"], k=1)[0].source == "home/tools.txt"
    memory.forget(notes / "home" / "tools.txt")  # HNSW cannot delete: the vector is masked
    assert "home/tools.txt" not in _sources(memory.search(FACTS["tools.txt"], k=20))
    assert isinstance(store.dense, DenseIndex)


def test_saving_a_conversation_into_memory(memory, tmp_path):
    from app.conversations import ConversationStore

    conversations = ConversationStore(tmp_path / "conversations.sqlite3")
    chat = conversations.create("m", "", "Where did I park the blue van?")
    conversations.add_exchange(
        chat.id, "Where did I park the blue van?", "Behind the old mill on Quay Street."
    )
    chunks = memory.remember_chat(conversations.get(chat.id))
    assert chunks >= 1
    hit = memory.search("where is the van parked", k=1)[0]
    assert hit.source == f"conversations/{chat.id}.md"
    assert "old mill" in hit.text
    memory.sync()  # a saved conversation has no file to scan, and sync must not drop it
    assert memory.search("where is the van parked", k=1)[0].source == f"conversations/{chat.id}.md"


def test_a_second_writer_waits_instead_of_corrupting(memory, notes):
    import threading

    memory.add([notes])
    (notes / "extra.md").write_text("# Extra\n\nThe spare key hangs behind the fuse box.\n")
    results = []
    threads = [threading.Thread(target=lambda: results.append(memory.sync())) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(r.added for r in results) == [0, 1]
    assert memory.search("where is the spare key", k=1)[0].source == "extra.md"


def test_copying_the_memory_elsewhere_still_opens(memory, notes, tmp_path, embedder):
    memory.add([notes])
    copy = tmp_path / "copy"
    shutil.copytree(memory.directory, copy)
    moved = Memory(copy, MemoryConfig(), None, embedder)
    assert moved.search(FACTS["trip.md"], k=1)[0].source == "travel/trip.md"


def test_progress_counts_up_to_every_passage_embedded(memory, notes):
    seen = []
    memory.add([notes], progress=lambda done, total: seen.append((done, total)))
    total = memory.store.chunk_count
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_a_root_that_is_not_there_keeps_its_notes_instead_of_dropping_them(memory, notes, tmp_path):
    memory.add([notes])
    count = memory.store.chunk_count
    notes.rename(tmp_path / "unplugged")  # a removable drive that is not mounted right now

    report = memory.sync()

    assert report.removed == 0 and report.unavailable == [str(notes)]
    assert memory.store.chunk_count == count


def test_a_root_with_nothing_indexed_can_still_be_forgotten(memory, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    memory.add([empty])
    assert memory.store.roots == [str(empty)]
    memory.forget(empty)
    assert memory.store.roots == []


def test_with_hyde_on_a_drafted_answer_guides_the_search_and_off_it_is_never_asked(tmp_path, embedder, notes):
    def words(text: str) -> int:
        return len(text.split())

    def never(question: str) -> str:
        raise AssertionError("memory.hyde is off: no draft may be written")

    directory = tmp_path / "home" / "memory"
    plain = Memory(directory, MemoryConfig(), None, embedder)
    plain.add([notes])
    vague = "what is that tall thing made of?"
    draft = "The lighthouse there is built from pink granite."
    assert plain.context_for(vague, words, never) is None  # nothing similar enough to the question
    assert plain.search(vague, k=1)[0].source != "travel/trip.md"

    hyde = Memory(directory, MemoryConfig(hyde=True), None, embedder)
    drafted = []
    context = hyde.context_for(vague, words, lambda q: drafted.append(q) or draft)
    assert drafted == [vague]
    assert context is not None and context.hits[0].source == "travel/trip.md"
    assert "pink granite" in context.hits[0].text


def test_a_long_ingest_commits_less_often_as_its_commits_grow_costly(memory, notes, monkeypatch):
    """Checkpoints keep a killed ingest's work, but at a million passages one commit takes seconds:
    the ingest waits four times a commit's cost before the next. A fake clock stands in for a
    large store (each commit "takes" 100 s, each file's embedding 30 s), so the test stays small."""
    for n in range(30):
        (notes / f"reading-{n}.md").write_text(f"# Reading {n}\n\nMeter {n} read {n * 7} at dawn.\n")
    clock = [0.0]
    monkeypatch.setattr("rag.ingest.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("rag.ingest.EMBED_BATCH_CHUNKS", 1)  # every file is a batch of its own
    commits_at: list[float] = []
    # Patched on the classes: an instance attribute left on the session's shared embedder would
    # be copied into every tuned embedder made from it later (copy.copy keeps the instance dict).
    embedder_class = type(memory.embedder)
    real_commit, real_embed = MemoryStore.commit, embedder_class.embed

    def costly_commit(store, **options):
        real_commit(store, **options)
        commits_at.append(clock[0])
        clock[0] += 100

    def slow_embed(embedder, texts):
        clock[0] += 30
        return real_embed(embedder, texts)

    monkeypatch.setattr(MemoryStore, "commit", costly_commit)
    monkeypatch.setattr(embedder_class, "embed", slow_embed)
    memory.add([notes])

    during_ingest = commits_at[1:-1]  # the roots' commit first, the final commit last
    assert len(during_ingest) >= 2, commits_at
    gaps = [later - earlier for earlier, later in zip(during_ingest, during_ingest[1:], strict=False)]
    assert all(gap > 100 + 4 * 100 for gap in gaps), gaps  # the commit, then 4 × its cost of work
    assert memory.store.chunk_count == MemoryStore.open(memory.directory).chunk_count > 0
