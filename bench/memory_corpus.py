"""Build a small public text corpus for the notes-search retrieval benchmark.

The corpus is made only of material that ships with a typical Linux machine:

* every topic of Python's ``pydoc_data.topics.topics`` as ``pydoc/<topic>.txt``;
* a fixed list of common man pages, rendered to plain text, as ``man/<name>.txt``.

The labelled questions in ``bench/data/memory_questions.jsonl`` refer to files
by these relative paths.

Usage::

    python3 bench/memory_corpus.py TARGET_DIR
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
from pydoc_data.topics import topics as PYDOC_TOPICS

# Common man pages rendered into ``man/<name>.txt``. Pages missing on the
# current machine are skipped with a warning on stderr.
MAN_PAGES: tuple[str, ...] = (
    "ls",
    "cp",
    "mv",
    "rm",
    "ln",
    "chmod",
    "find",
    "grep",
    "sed",
    "awk",
    "sort",
    "uniq",
    "cut",
    "tr",
    "xargs",
    "head",
    "tail",
    "wc",
    "diff",
    "patch",
    "tar",
    "gzip",
    "xz",
    "du",
    "df",
    "ps",
    "top",
    "kill",
    "tmux",
    "bash",
    "less",
    "ssh",
    "scp",
    "ssh-keygen",
    "curl",
    "wget",
    "git",
    "make",
    "date",
    "timeout",
    "dd",
    "systemctl",
    "journalctl",
)

MAN_WIDTH = "80"
MAN_TIMEOUT_S = 60

# A character followed by a backspace (bold/underline overstrike) and ANSI SGR codes.
_OVERSTRIKE = re.compile(r".\x08")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _clean(text: str) -> str:
    text = _ANSI.sub("", _OVERSTRIKE.sub("", text))
    lines = [line.rstrip() for line in text.splitlines()]
    return "\n".join(lines).strip("\n") + "\n"


def render_man_page(name: str) -> str | None:
    """Return the man page ``name`` (or, with a path, that page file) as plain text, or None if it
    is unavailable."""
    env = dict(os.environ)
    env.pop("MAN_KEEP_FORMATTING", None)
    env.update(MANWIDTH=MAN_WIDTH, LC_ALL="C.UTF-8")
    page = ["-l", name] if "/" in name else [name]
    try:
        found = subprocess.run(
            ["man", "-w", *page],
            env=env,
            capture_output=True,
            text=True,
            timeout=MAN_TIMEOUT_S,
        )
        if found.returncode != 0:
            return None
        # --nh/--nj: no hyphenation or justification, so words stay whole.
        proc = subprocess.run(
            ["man", "--nh", "--nj", "-P", "cat", *page],
            env=env,
            capture_output=True,
            timeout=MAN_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return _clean(proc.stdout.decode("utf-8", errors="replace"))


def build_corpus(target: pathlib.Path) -> int:
    """Write the corpus under ``target`` and return the number of files written."""
    target = pathlib.Path(target)
    written = 0

    pydoc_dir = target / "pydoc"
    pydoc_dir.mkdir(parents=True, exist_ok=True)
    for topic, text in sorted(PYDOC_TOPICS.items()):
        (pydoc_dir / f"{topic}.txt").write_text(f"{topic}\n\n{text}", encoding="utf-8")
        written += 1

    man_dir = target / "man"
    man_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which("man") is None:
        print("warning: `man` not found; skipping all man pages", file=sys.stderr)
        return written
    for name in MAN_PAGES:
        page = render_man_page(name)
        if page is None:
            print(f"warning: man page {name!r} not available; skipped", file=sys.stderr)
            continue
        (man_dir / f"{name}.txt").write_text(page, encoding="utf-8")
        written += 1
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} TARGET_DIR", file=sys.stderr)
        return 2
    count = build_corpus(pathlib.Path(argv[1]))
    print(f"wrote {count} files to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
