"""Where Lantern keeps everything it writes: one private folder, the data home."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.errors import LanternError


def default_home_path() -> Path:
    """``$LANTERN_HOME``, else ``$XDG_DATA_HOME/lantern``, else ``~/.local/share/lantern``."""
    explicit = os.environ.get("LANTERN_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "lantern"


@dataclass(frozen=True)
class DataHome:
    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def cache_dir(self) -> Path:
        """What Lantern can rebuild from model files alone (never anything from the notes)."""
        return self.root / "cache"

    @property
    def kv_states_dir(self) -> Path:
        """Saved conversation states (derived from chats: never written with an encrypted home)."""
        return self.root / "kv-states"

    @property
    def model_registry(self) -> Path:
        return self.root / "models.json"

    @property
    def conversations_db(self) -> Path:
        return self.root / "conversations.sqlite3"

    @property
    def in_use_lock(self) -> Path:
        """Shared-locked by every process using the home; `init --encrypt` needs it alone."""
        return self.root / "in-use.lock"

    def private_file(self, path: Path) -> Path:
        """Create ``path`` (if missing) readable by its owner only, and return it."""
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
        return path

    @classmethod
    def open(cls, root: Path | None = None) -> DataHome:
        """Create the data home (mode 0700) if needed and return it."""
        home = cls(Path(root) if root is not None else default_home_path())
        try:
            for directory in (home.root, home.models_dir):
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                # mkdir's mode is filtered by the umask; the notes and chats here are private.
                os.chmod(directory, 0o700)
        except OSError as exc:
            raise LanternError(
                f"cannot create the data home {home.root}: {exc.strerror}. "
                "Set LANTERN_HOME to a folder you can write."
            ) from exc
        return home


class InUse:
    """This process's shared lock on the data home, held from start to close."""

    def __init__(self, home: DataHome):
        self._fd = os.open(home.private_file(home.in_use_lock), os.O_RDWR)
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    @contextlib.contextmanager
    def alone(self, action: str) -> Iterator[None]:
        """Hold the home exclusively for ``action``, or refuse at once if another process uses it
        (its open database would go on writing into the replaced plain file)."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LanternError(
                f"another Lantern (the TUI, 'lantern serve' or a chat) is using this data home; close it, "
                f"then {action} again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
