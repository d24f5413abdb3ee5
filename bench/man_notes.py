"""Section-1 man pages of this machine as a notes folder: a corpus larger than a twin can read in
ten minutes, where training speed turns into quality (unlike the pydoc topics, which a twin reads
in a few minutes and then memorises).

The pages are a fixed sample (ordered by a hash of the file name) of /usr/share/man/man1 (English),
rendered to plain text by ``man``; the same machine image gives the same notes. The gcloud pages
(16,631 of this machine's 17,904, generated from one template) are left out, so the sample is
hand-written pages of many programs.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from memory_corpus import render_man_page

MAN1 = Path("/usr/share/man/man1")


def _sample_order(path: Path) -> str:
    return hashlib.sha256(path.name.encode()).hexdigest()


def write_man_notes(folder: Path, pages: int = 500, min_chars: int = 1500, max_chars: int = 40_000) -> int:
    """Render ``pages`` man pages of a useful size into ``folder``; return how many were written."""
    if not MAN1.is_dir():
        raise SystemExit(
            f"{MAN1} is missing: install man pages (apt-get install man-db) or use --corpus pydoc"
        )
    folder.mkdir(parents=True, exist_ok=True)
    candidates = sorted(
        (p for p in MAN1.iterdir() if p.is_file() and not p.is_symlink() and not p.name.startswith("gcloud")),
        key=_sample_order,
    )
    written = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(candidates), 64):
            chunk = candidates[start : start + 64]
            for path, text in zip(chunk, pool.map(lambda p: render_man_page(str(p)), chunk), strict=True):
                if text is None or not min_chars <= len(text) <= max_chars:
                    continue
                (folder / f"{path.name.removesuffix('.gz')}.txt").write_text(text, encoding="utf-8")
                written += 1
                if written == pages:
                    return written
    return written
