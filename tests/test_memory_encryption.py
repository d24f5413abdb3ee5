"""An encrypted memory: unreadable without the passphrase, and loud about any change to its files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.config import MemoryConfig
from app.home_key import HomeKey
from app.memory import Memory
from rag.errors import TamperedFileError, WrongKeyError
from tests.memory_fixtures import FACTS, make_notes

PASSPHRASE = b"correct horse battery staple"


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory, embedder):
    """A data home whose memory was encrypted first, then filled with notes."""
    base = tmp_path_factory.mktemp("encrypted")
    notes = make_notes(base / "notes")
    key = HomeKey.create(base / "home", PASSPHRASE)
    memory = Memory(base / "home" / "memory", MemoryConfig(), key, embedder)
    memory.seal(key.data_cipher())
    memory.add([notes])
    memory.sync()
    return base / "home" / "memory", notes


def _open(directory: Path, embedder, secret: bytes = PASSPHRASE) -> Memory:
    """The memory in ``directory``, unlocked with the key of the home around it."""
    return Memory(directory, MemoryConfig(), HomeKey(directory.parent, lambda: secret), embedder)


def _copy_home(memory_directory: Path, tmp_path: Path) -> Path:
    shutil.copytree(memory_directory.parent, tmp_path / "home")
    return tmp_path / "home" / "memory"


def test_the_right_passphrase_opens_it_and_search_cites_notes(encrypted, embedder):
    directory, _ = encrypted
    memory = _open(directory, embedder)
    assert memory.store.cipher is not None
    assert memory.search(FACTS["trip.md"], k=1)[0].source == "travel/trip.md"


def test_nothing_of_the_notes_is_left_in_plaintext_on_disk(encrypted):
    directory, _ = encrypted
    needles = [fact.encode() for fact in FACTS.values()]
    needles += [b"pink granite", b"Lighthouses", b"travel/trip.md", b"garden.org", b"sourdough"]
    files = [p for p in directory.parent.rglob("*") if p.is_file()]
    assert any(p.name.startswith("index-") for p in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle!r} is readable in {path}"


def test_a_wrong_passphrase_is_a_clear_error(encrypted, embedder):
    directory, _ = encrypted
    with pytest.raises(WrongKeyError, match="wrong passphrase"):
        _open(directory, embedder, b"not the passphrase").search("lighthouse")


@pytest.mark.parametrize("name", ["keyring.json", "manifest.lmem", "chunks-*.lmem", "index-*.lmem"])
@pytest.mark.parametrize("where", [0.5, -1])
def test_a_flipped_byte_in_any_file_is_named_and_nothing_is_loaded(
    encrypted, embedder, tmp_path, name, where
):
    directory, _ = encrypted
    copy = _copy_home(directory, tmp_path)
    target = next(copy.glob(name))
    data = bytearray(target.read_bytes())
    position = int(len(data) * where) if where > 0 else len(data) - 1
    data[position] ^= 0x01
    target.write_bytes(bytes(data))

    memory = _open(copy, embedder)
    with pytest.raises(TamperedFileError) as failure:
        memory.search("lighthouse")
    assert target.name in str(failure.value)
    assert memory._store is None or not memory._store._chunks  # no partial load


def test_a_file_swapped_for_another_is_refused(encrypted, embedder, tmp_path):
    directory, _ = encrypted
    copy = _copy_home(directory, tmp_path)
    chunks = next(copy.glob("chunks-*.lmem"))
    index = next(copy.glob("index-*.lmem"))
    chunks.write_bytes(index.read_bytes())  # valid ciphertext under the right key, wrong file
    with pytest.raises(TamperedFileError, match=chunks.name):
        _open(copy, embedder).search("lighthouse")


def test_a_key_file_works_instead_of_a_passphrase(tmp_path, embedder):
    key_file = tmp_path / "memory.key"
    key_file.write_bytes(bytes(range(64)))
    notes = make_notes(tmp_path / "notes")
    key = HomeKey.create(tmp_path, key_file.read_bytes())
    memory = Memory(tmp_path / "memory", MemoryConfig(), key, embedder)
    memory.seal(key.data_cipher())
    memory.add([notes / "travel"])
    assert _open(tmp_path / "memory", embedder, key_file.read_bytes()).search("lighthouse", k=1)
    with pytest.raises(WrongKeyError):
        _open(tmp_path / "memory", embedder, b"a guess").search("lighthouse")


def test_encrypting_an_existing_plain_memory_rewrites_it_sealed(tmp_path, embedder):
    notes = make_notes(tmp_path / "notes")
    directory = tmp_path / "memory"
    plain = Memory(directory, MemoryConfig(), None, embedder)
    plain.add([notes])
    plain.seal(HomeKey.create(tmp_path, PASSPHRASE).data_cipher())
    for path in directory.iterdir():
        assert b"pink granite" not in path.read_bytes(), path
    assert _open(directory, embedder).search(FACTS["trip.md"], k=1)[0].source == "travel/trip.md"


def test_an_encryption_interrupted_before_its_commit_is_undone(tmp_path, embedder):
    notes = make_notes(tmp_path / "notes")
    directory = tmp_path / "memory"
    Memory(directory, MemoryConfig(), None, embedder).add([notes])
    from rag.crypto import DataKeyCheck

    cipher = HomeKey.create(tmp_path, PASSPHRASE).data_cipher()
    (directory / "keyring.json.pending").write_bytes(DataKeyCheck.create(cipher).to_bytes())  # killed here

    reopened = Memory(directory, MemoryConfig(), None, embedder)
    assert reopened.search(FACTS["trip.md"], k=1)[0].source == "travel/trip.md"
    assert not (directory / "keyring.json.pending").exists() and not reopened.is_encrypted()


def test_an_encryption_interrupted_after_its_commit_is_finished(tmp_path, embedder, monkeypatch):
    notes = make_notes(tmp_path / "notes")
    directory = tmp_path / "memory"
    Memory(directory, MemoryConfig(), None, embedder).add([notes])

    from rag.store import MemoryStore

    commit = MemoryStore.commit

    def killed_right_after_the_commit(self):
        commit(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(MemoryStore, "commit", killed_right_after_the_commit)
    with pytest.raises(KeyboardInterrupt):
        cipher = HomeKey.create(tmp_path, PASSPHRASE).data_cipher()
        Memory(directory, MemoryConfig(), None, embedder).seal(cipher)
    monkeypatch.undo()

    assert (directory / "keyring.json.pending").exists()
    assert _open(directory, embedder).search(FACTS["trip.md"], k=1)[0].source == "travel/trip.md"
    assert (directory / "keyring.json").exists()


def test_a_memory_encrypted_on_its_own_before_still_opens_and_joins_the_home_key(tmp_path, embedder):
    """Homes from before the whole home was sealed: the memory had a scrypt keyring of its own.
    It opens with the passphrase as before, and sealing the home adopts its key, so the memory
    files are not rewritten."""
    from rag.crypto import Keyring
    from rag.store import MemoryStore

    notes = make_notes(tmp_path / "notes")
    directory = tmp_path / "home" / "memory"
    Memory(directory, MemoryConfig(), None, embedder).add([notes])
    keyring, cipher = Keyring.create(PASSPHRASE)
    store = MemoryStore.open(directory)
    store._ensure_loaded()
    store.cipher = cipher
    store.commit()  # what encrypting a memory alone used to write
    (directory / "keyring.json").write_bytes(keyring.to_bytes())
    assert _open(directory, embedder).search(FACTS["trip.md"], k=1)[0].source == "travel/trip.md"

    from app.assistant import Assistant
    from app.sealing import encrypt_home

    sealed_files = {p.name: p.read_bytes() for p in directory.glob("*-*.lmem")}
    assistant = Assistant(tmp_path / "home")
    encrypt_home(assistant, PASSPHRASE)
    assistant.close()
    assert {p.name: p.read_bytes() for p in directory.glob("*-*.lmem")} == sealed_files
    assert _open(directory, embedder).search(FACTS["trip.md"], k=1)[0].source == "travel/trip.md"
    with pytest.raises(WrongKeyError):
        _open(directory, embedder, b"a guess").search("lighthouse")
