"""Private temporary files: plain copies of sealed files that a library must read by name
(llama.cpp's LoRA adapters) or must write by name (the GGUF writer) while the home is encrypted.

They live in one folder per user, ``lantern-<uid>`` under the system's temporary directory (mode
0700, refused if another user owns it), each file mode 0600 and named after the process that made
it (``adapter-<pid>-<random>.gguf``), and are removed when their block ends. A process that died
mid-block leaves its file behind: the next start removes the files of processes no longer alive.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from app.errors import LanternError

_OWNED = re.compile(r"^[a-z]+-(?P<pid>\d+)-")


def private_temp_dir(create: bool = True) -> Path:
    """``lantern-<uid>`` under the temporary directory, only its owner's to read."""
    folder = Path(tempfile.gettempdir()) / f"lantern-{os.getuid()}"
    if create:
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return folder
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise LanternError(
            f"{folder} is not a folder of yours; remove it (or set TMPDIR to a private folder) "
            "so Lantern can keep its temporary files there"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(folder, 0o700)
    return folder


@contextlib.contextmanager
def private_temp_file(kind: str, suffix: str) -> Iterator[Path]:
    """An empty file ``<kind>-<pid>-<random><suffix>`` (mode 0600), removed when the block ends."""
    fd, name = tempfile.mkstemp(prefix=f"{kind}-{os.getpid()}-", suffix=suffix, dir=private_temp_dir())
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temp_files() -> list[Path]:
    """Remove the files that processes which died (a crash, a kill) left in the private folder."""
    try:
        folder = private_temp_dir(create=False)
    except LanternError:
        return []  # not ours: nothing of ours is in it (private_temp_dir says so when it is needed)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        owner = _OWNED.match(path.name)
        if owner is None or _alive(int(owner["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def private_temp_folder(kind: str) -> Iterator[Path]:
    """An empty folder ``<kind>-<pid>-<random>`` (a library's scratch), removed when the block ends."""
    with tempfile.TemporaryDirectory(prefix=f"{kind}-{os.getpid()}-", dir=private_temp_dir()) as name:
        yield Path(name)
