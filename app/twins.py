"""The twin registry: each twin is a folder in the data home with its adapter, dataset, checkpoint
and a twin.json that names the base model it adapts."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from app.atomic import atomic_write_text
from app.errors import LanternError
from app.home import DataHome
from app.model_store import check_model_name
from app.private_files import is_sealed, read_private, write_private
from app.private_temp import private_temp_file, remove_stale_temp_files
from rag.crypto import Cipher

ADAPTER_FILE = "adapter.gguf"
RECORD_FILE = "twin.json"


@dataclass
class TwinRecord:
    name: str
    base_model: str  # a name in the model store
    notes: str  # the notes folder it was built from
    created_at: str = ""
    scale: float = 1.0  # how strongly the adapter is applied at run time
    trained: bool = False  # an adapter has been exported
    merged_model: str | None = None  # the store name of the merged, re-quantized model, if built
    training: dict = field(default_factory=dict)  # settings and measured speed
    results: dict = field(default_factory=dict)  # held-out perplexities


class TwinStore:
    def __init__(self, home: DataHome):
        self.root = home.root / "twins"
        remove_stale_temp_files()  # plain adapters a crashed process left in the temporary folder

    def folder(self, name: str) -> Path:
        return self.root / check_model_name(name)

    def adapter_path(self, name: str) -> Path:
        return self.folder(name) / ADAPTER_FILE

    @contextlib.contextmanager
    def adapter_file(self, name: str, cipher: Cipher | None) -> Iterator[Path]:
        """A path llama.cpp can load the twin's adapter from: the adapter itself in a plain home;
        in an encrypted one, a private temporary copy opened from the sealed adapter, removed when
        the block ends (llama.cpp reads the whole adapter while the model loads)."""
        adapter = self.adapter_path(name)
        if cipher is None:
            yield adapter
            return
        with private_temp_file("adapter", ".gguf") as plain:
            plain.write_bytes(read_private(adapter, cipher))
            yield plain

    def merged_models(self) -> list[str]:
        """The store names of the merged models the twins wrote: whole models that have learned
        the notes, kept plain (llama.cpp maps model files), so `init --encrypt` names them."""
        return [r.merged_model for r in self.list() if r.merged_model]

    def exists(self, name: str) -> bool:
        return (self.folder(name) / RECORD_FILE).is_file()

    def get(self, name: str) -> TwinRecord:
        path = self.folder(name) / RECORD_FILE
        if not path.is_file():
            known = ", ".join(t.name for t in self.list()) or "none"
            raise LanternError(
                f"no twin named {name!r} (known: {known}); "
                f"build one with 'lantern twin build NOTES --name {name}'"
            )
        try:
            return TwinRecord(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise LanternError(f"{path} is damaged ({exc}); remove the twin and build it again") from None

    def save(self, record: TwinRecord) -> None:
        folder = self.folder(record.name)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not record.created_at:
            record.created_at = datetime.now(UTC).isoformat(timespec="seconds")
        atomic_write_text(folder / RECORD_FILE, json.dumps(asdict(record), indent=2))

    def list(self) -> list[TwinRecord]:
        if not self.root.is_dir():
            return []
        return [self.get(p.parent.name) for p in sorted(self.root.glob(f"*/{RECORD_FILE}"))]

    def seal_all(self, cipher: Cipher) -> list[Path]:
        """Seal every twin file not sealed yet (datasets, checkpoints, adapters); twin.json, which
        names the base model and the settings, stays readable. Returns the files sealed."""
        sealed = []
        if self.root.is_dir():
            for path in sorted(self.root.rglob("*")):
                if path.is_file() and path.name != RECORD_FILE and not is_sealed(path):
                    write_private(path, path.read_bytes(), cipher)
                    sealed.append(path)
        return sealed

    def remove(self, name: str) -> TwinRecord:
        record = self.get(name)
        shutil.rmtree(self.folder(name))
        return record
