"""The held-out collection of bench/data/doc_questions.jsonl: prose Debian installs under
/usr/share/doc, materialised as files Lantern's memory reads.

Every file listed in bench/data/doc_corpus.txt is checked against its recorded sha256 (another
Debian release ships other texts: then the figures would describe another collection), then
written decompressed under a name Lantern accepts: ``<source without .gz>`` plus ``.txt`` unless
it already ends in ``.txt`` or ``.md``. ``memory_name`` maps a question's label to that name.

Usage::

    python3 bench/doc_corpus.py TARGET_DIR
"""

from __future__ import annotations

import gzip
import hashlib
import pathlib
import sys

LISTING = pathlib.Path(__file__).resolve().parent / "data" / "doc_corpus.txt"
ROOT = pathlib.Path("/usr/share/doc")
READABLE = (".txt", ".md")


class CollectionMismatch(RuntimeError):
    """This machine's /usr/share/doc is not the collection the questions were written over."""


def memory_name(source: str) -> str:
    """The path, relative to the materialised collection, that Lantern reports for ``source``."""
    name = source.removesuffix(".gz")
    return name if name.endswith(READABLE) else name + ".txt"


def build_doc_corpus(target: pathlib.Path) -> int:
    """Write the collection under ``target``; the number of files. Raises CollectionMismatch when
    a listed file is missing or differs from the recorded hash."""
    target = pathlib.Path(target)
    differing = []
    entries = [line.split() for line in LISTING.read_text(encoding="utf-8").splitlines() if line.strip()]
    for path_text, digest in entries:
        path = pathlib.Path(path_text)
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            differing.append(path_text)
            continue
        raw = path.read_bytes()
        text = gzip.decompress(raw) if path.suffix == ".gz" else raw
        out = target / memory_name(str(path.relative_to(ROOT)))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(text)
    if differing:
        raise CollectionMismatch(
            f"{len(differing)} of {len(entries)} files of {LISTING.name} are missing or differ here "
            f"(first: {differing[0]}); the held-out figures would describe another collection"
        )
    return len(entries)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} TARGET_DIR", file=sys.stderr)
        return 2
    print(f"wrote {build_doc_corpus(pathlib.Path(argv[1]))} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
