"""The plain text of a notes folder (or one file), read with the memory's own loaders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quantize.errors import ConversionError
from rag.documents import SUPPORTED_SUFFIXES, UnreadableFile, is_supported, load_sections


@dataclass(frozen=True)
class NoteText:
    path: Path
    sections: tuple[tuple[tuple[str, ...], str], ...]  # (heading path, text) in file order

    @property
    def text(self) -> str:
        return "\n\n".join(text for _, text in self.sections)


@dataclass(frozen=True)
class NotesRead:
    notes: tuple[NoteText, ...]
    skipped: tuple[tuple[Path, str], ...]  # files that could not be read, with the reason


def read_notes(root: Path) -> NotesRead:
    """Every supported note under ``root``; raise ConversionError if there is no text at all."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ConversionError(f"{root} does not exist; point at a folder of notes or a note file")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    notes, skipped = [], []
    base = root.parent if root.is_file() else root
    for path in files:
        if any(part.startswith(".") for part in path.relative_to(base).parts):
            continue  # hidden files and folders (.git, .obsidian) are not notes
        if not is_supported(path):
            skipped.append((path, f"not a note type ({', '.join(sorted(SUPPORTED_SUFFIXES))})"))
            continue
        try:
            sections = load_sections(path, path.read_bytes())
        except (UnreadableFile, OSError, ValueError) as exc:
            skipped.append((path, str(exc)))
            continue
        kept = tuple((s.headings, s.text) for s in sections if s.text.strip())
        if kept:
            notes.append(NoteText(path, kept))
    if not notes:
        detail = ""
        if skipped:
            detail = f"; skipped {len(skipped)} file(s), e.g. {skipped[0][0].name}: {skipped[0][1]}"
        raise ConversionError(f"no readable notes in {root}{detail}")
    return NotesRead(tuple(notes), tuple(skipped))


def note_token_ids(tokenizer, notes: NotesRead, max_tokens: int) -> list[int]:
    """The notes' first ``max_tokens`` tokens, each note followed by a blank line."""
    ids: list[int] = []
    for note in notes.notes:
        ids += tokenizer.encode(note.text + "\n\n", add_special_tokens=False)
        if len(ids) >= max_tokens:
            break
    return ids[:max_tokens]
