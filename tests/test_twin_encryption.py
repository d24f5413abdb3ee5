"""A twin in an encrypted data home, as its owner uses it: built from notes with sentences no one
else has, every file it writes sealed, and not one of those sentences readable on disk (in the data
home or the temporary folder, as UTF-8, UTF-16 or base64), while `ask --twin` and `twin eval` still
answer through its adapter. Small step counts on the real SmolLM2, as tests/test_twin.py."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from app.private_files import is_sealed
from tests.conftest import LANTERN

PASSPHRASE = "heron-and-orchard-key"
SENTENCES = [
    "The violet heron of Tarrowmere nests behind the old grain silo every April.",
    "Grandmother Quillon kept the brass key to the orchard in a jar of buttons.",
    "Our canoe, the Saffron Otter, leaked only when Bertram paddled on Thursdays.",
]
BUILD = ["--steps", "2", "--train-layers", "2", "--rank", "4", "--seed", "3", "--seq-len", "128"]


@pytest.fixture(scope="module")
def notes(tmp_path_factory) -> Path:
    """Six pydoc topics (enough text to train on), each with two of the owner's own sentences."""
    folder = tmp_path_factory.mktemp("notes")
    for i, topic in enumerate(["assert", "class", "for", "while", "with", "try"]):
        mine = SENTENCES[i % 3], SENTENCES[(i + 1) % 3]
        (folder / f"{topic}.md").write_text(f"# {topic}\n\n{mine[0]}\n\n{topics[topic]}\n\n{mine[1]}\n")
    return folder


class Home:
    """A data home and the temporary folder its `lantern` runs use."""

    def __init__(self, root: Path, temp: Path, passphrase: str | None):
        self.root, self.temp = root, temp
        self.temp.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "LANTERN_HOME": str(root), "TMPDIR": str(temp)}
        self.env.pop("LANTERN_PASSPHRASE", None)
        if passphrase is not None:
            self.env["LANTERN_PASSPHRASE"] = passphrase

    def lantern(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(LANTERN), *args], capture_output=True, text=True, timeout=600, env=self.env
        )

    def twin_files(self, name: str) -> list[Path]:
        return sorted(p for p in (self.root / "twins" / name).rglob("*") if p.is_file())

    def plain_copies(self) -> list[Path]:
        return sorted((self.temp / f"lantern-{os.getuid()}").glob("*"))


@pytest.fixture(scope="module")
def encrypted(notes, tmp_path_factory) -> Home:
    """An encrypted data home with a twin built in it: `init --encrypt`, then `twin build`."""
    base = tmp_path_factory.mktemp("encrypted")
    home = Home(base / "home", base / "tmp", PASSPHRASE)
    init = home.lantern("init", "--encrypt")
    assert init.returncode == 0, init.stderr
    build = home.lantern("twin", "build", str(notes), *BUILD, "--name", "diary")
    assert build.returncode == 0, build.stderr
    assert "Twin diary: 2 steps" in build.stdout
    return home


def _forms(sentence: str) -> list[bytes]:
    """The sentence as UTF-8 and UTF-16-LE, and its base64 at each of the three alignments."""
    utf8 = sentence.encode("utf-8")
    forms = [utf8, sentence.encode("utf-16-le")]
    forms += [base64.b64encode(b"\0" * shift + utf8)[4:-4] for shift in range(3)]
    return forms


def _readable_notes(*folders: Path) -> list[str]:
    found = []
    for folder in folders:
        for path in (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            data = path.read_bytes()
            found += [f"{path}: {s!r}" for s in SENTENCES for form in _forms(s) if form in data]
    return found


def test_every_file_of_the_twin_is_sealed_but_its_record(encrypted):
    files = {
        p.relative_to(encrypted.root / "twins" / "diary").as_posix(): p for p in encrypted.twin_files("diary")
    }
    assert {"adapter.gguf", "checkpoint.pt", "dataset/train.jsonl", "dataset/heldout.jsonl"} <= files.keys()
    assert [name for name, path in files.items() if not is_sealed(path)] == ["twin.json"]
    record = json.loads(files["twin.json"].read_text())
    assert record["trained"] and record["base_model"]  # names the base model, not the notes' text
    assert encrypted.plain_copies() == []  # the adapter was written sealed, with no plain copy left


def test_the_sealed_twin_answers_in_the_terminal_and_in_twin_eval(encrypted):
    ask = encrypted.lantern(
        "ask", "--twin", "diary", "Where does the heron nest?", "-t", "0", "--max-tokens", "12"
    )
    assert ask.returncode == 0, ask.stderr
    assert ask.stdout.strip()
    evaluated = encrypted.lantern("twin", "eval", "diary", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    measured = json.loads(evaluated.stdout.splitlines()[0])
    assert measured["tokens_scored"] > 0 and measured["twin_ppl"] > 1
    assert encrypted.plain_copies() == []  # each run removed its plain adapter once llama.cpp had it


def test_the_plain_adapter_lives_only_while_the_engine_loads(encrypted, monkeypatch):
    from app.assistant import Assistant

    monkeypatch.setenv("LANTERN_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(tempfile, "tempdir", str(encrypted.temp))
    assistant = Assistant(encrypted.root)
    try:
        engine = assistant.engine("diary")
        assert encrypted.plain_copies() == []  # loaded, and no plain adapter left behind
        assert engine.lora_path == encrypted.root / "twins" / "diary" / "adapter.gguf"
        answer = "".join(
            assistant.ask("Who kept the key?", model="diary", settings=assistant.settings(max_tokens=8))
        )
        assert answer.strip()
    finally:
        assistant.close()


def test_a_merged_twin_is_refused_before_training(encrypted, notes):
    merge = encrypted.lantern("twin", "build", str(notes), *BUILD, "--name", "merged", "--merge")
    assert merge.returncode != 0
    assert "--merge is refused in an encrypted data home" in merge.stderr
    assert "sealed adapter" in merge.stderr and "Traceback" not in merge.stderr
    assert not (encrypted.root / "twins" / "merged").exists()


def test_a_sealed_checkpoint_opens_with_the_home_key_for_resume(encrypted):
    from app.home import DataHome
    from app.home_key import HomeKey
    from quantize.twin.trainer import CHECKPOINT, read_checkpoint

    key = HomeKey(DataHome.open(encrypted.root).root, lambda: PASSPHRASE.encode())
    checkpoint = read_checkpoint(encrypted.root / "twins" / "diary" / CHECKPOINT, key.cipher())
    assert checkpoint["state"]["step"] == 2 and checkpoint["lora"] and checkpoint["optimizer"]


def test_a_flipped_byte_in_the_sealed_adapter_is_named(encrypted):
    twins = encrypted.root / "twins"
    (twins / "altered").mkdir()
    for name in ("twin.json", "adapter.gguf"):
        data = bytearray((twins / "diary" / name).read_bytes())
        if name == "adapter.gguf":
            data[len(data) // 2] ^= 0x01
        (twins / "altered" / name).write_bytes(bytes(data))
    ask = encrypted.lantern("ask", "--twin", "altered", "Where does the heron nest?", "--max-tokens", "4")
    assert ask.returncode != 0
    assert str(twins / "altered" / "adapter.gguf") in ask.stderr and "damaged or was altered" in ask.stderr
    assert "Traceback" not in ask.stderr
    assert encrypted.plain_copies() == []


def test_nothing_of_the_notes_is_readable_in_the_home_or_the_temporary_folder(encrypted):
    """After building, asking, evaluating and a refused build: a byte-level search finds nothing."""
    assert (encrypted.root / "twins" / "diary" / "adapter.gguf").stat().st_size > 0
    assert _readable_notes(encrypted.root, encrypted.temp) == []


def test_files_a_crashed_process_left_are_removed_at_the_next_start(tmp_path, monkeypatch):
    from app.home import DataHome
    from app.twins import TwinStore

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    folder = tmp_path / "tmp" / f"lantern-{os.getuid()}"
    folder.mkdir(mode=0o700)
    crashed = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(crashed.stdout)  # that process has exited: its pid is no longer alive
    left = folder / f"adapter-{dead_pid}-x1y2z3.gguf"
    left.write_bytes(b"a plain adapter a crash left")
    (folder / f"dpo-{dead_pid}-abc").mkdir()
    mine = folder / f"adapter-{os.getpid()}-q9w8e7.gguf"  # a live process's file, in use
    mine.write_bytes(b"in use")

    TwinStore(DataHome.open(tmp_path / "home"))

    assert sorted(p.name for p in folder.iterdir()) == [mine.name]


def test_a_twin_built_before_encryption_is_sealed_by_init_and_still_answers(notes, tmp_path):
    home = Home(tmp_path / "home", tmp_path / "tmp", None)
    build = home.lantern("twin", "build", str(notes), *BUILD, "--name", "early")
    assert build.returncode == 0, build.stderr
    assert not any(is_sealed(p) for p in home.twin_files("early"))
    # A merged twin model from before stays plain for llama.cpp, and `init --encrypt` says so.
    record_path = home.root / "twins" / "early" / "twin.json"
    record = json.loads(record_path.read_text())
    added = home.lantern("models", "add", str(_a_model_file(home)), "--name", "early-merged")
    assert added.returncode == 0, added.stderr
    record_path.write_text(json.dumps({**record, "merged_model": "early-merged"}))

    home.env["LANTERN_PASSPHRASE"] = PASSPHRASE
    init = home.lantern("init", "--encrypt")
    assert init.returncode == 0, init.stderr
    assert (
        "sealed twins/early/adapter.gguf" in init.stdout and "sealed twins/early/checkpoint.pt" in init.stdout
    )
    assert (
        "not sealed: " in init.stdout
        and "(a merged twin model; remove it with 'lantern models rm early-merged'" in init.stdout
    )
    assert [p.name for p in home.twin_files("early") if not is_sealed(p)] == ["twin.json"]

    ask = home.lantern("ask", "--twin", "early", "Where does the heron nest?", "-t", "0", "--max-tokens", "8")
    assert ask.returncode == 0, ask.stderr
    assert ask.stdout.strip()
    assert home.plain_copies() == []
    assert _readable_notes(home.root / "twins", home.temp) == []


def _a_model_file(home: Home) -> Path:
    """Stands in for a merged model: the store only needs a GGUF file to hold."""
    from tests.gguf_fixtures import write_one_tensor_gguf

    path = home.temp / "stand-in.gguf"
    write_one_tensor_gguf(path, "llama")
    return path
