"""From a notes folder to training text: the notes in the owner's voice (continued pre-training)
plus chat samples (a question built from a heading or a first sentence, the section as the
answer), deduplicated, split by file so no note is on both sides, packed to the sequence length."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from app.private_files import read_private, write_private
from quantize.errors import ConversionError
from quantize.notes_text import NotesRead, read_notes
from rag.crypto import Cipher

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class TwinSample:
    kind: str  # "text" (the note itself) or "chat" (question -> section)
    source: str  # the note file, relative to the notes folder
    text: str  # for "text": the passage; for "chat": the answer
    prompt: str | None = None  # for "chat": the user's question


@dataclass(frozen=True)
class DatasetSplit:
    samples: tuple[TwinSample, ...]
    files: tuple[str, ...]


@dataclass(frozen=True)
class TwinDataset:
    train: DatasetSplit
    heldout: DatasetSplit
    skipped: tuple[tuple[str, str], ...]  # unreadable or unsupported files, with the reason
    duplicates_dropped: int
    # Paragraphs of held-out notes that a training note also holds, left out so eval scores unseen text.
    heldout_paragraphs_dropped: int = 0

    def counts(self) -> dict:
        def by_kind(split: DatasetSplit) -> dict:
            kinds = {"text": 0, "chat": 0}
            for sample in split.samples:
                kinds[sample.kind] += 1
            return {"files": len(split.files), **kinds}

        return {
            "train": by_kind(self.train),
            "heldout": by_kind(self.heldout),
            "duplicates_dropped": self.duplicates_dropped,
            "heldout_paragraphs_dropped": self.heldout_paragraphs_dropped,
            "skipped_files": len(self.skipped),
        }


def _hash_order(relative: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{relative}".encode()).digest()[:8], "big")


def choose_heldout(words_by_file: dict[str, int], seed: int, fraction: float) -> set[str]:
    """Whole files, about ``fraction`` of the notes' words, taken in a seeded hash order.

    A file goes to the held-out side when it still fits under the target, so one long note cannot
    take a third of the notes out of training (a coin toss per file did that: 12 of 79 pydoc files
    held out 39% of the words). The order depends only on each path and the seed, so adding notes
    moves few files: only those near the target's edge.
    """
    target = fraction * sum(words_by_file.values())
    held: set[str] = set()
    held_words = 0
    for relative in sorted(words_by_file, key=lambda name: (_hash_order(name, seed), name)):
        words = words_by_file[relative]
        if words and held_words + words <= target:
            held.add(relative)
            held_words += words
    with_text = [name for name, words in words_by_file.items() if words]
    if not held and len(with_text) > 1:
        # Every file is larger than the target: hold out the smallest, so eval has unseen notes.
        held.add(min(with_text, key=lambda name: (words_by_file[name], name)))
    return held


def _question(headings: tuple[str, ...], text: str) -> str:
    if headings:
        return f"What do my notes say about {' / '.join(headings)}?"
    first = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    words = first.split()
    return f'Continue my note that begins: "{" ".join(words[:12])}"'


def _paragraphs(text: str) -> list[str]:
    return [paragraph for paragraph in re.split(r"\n\s*\n", text) if paragraph.strip()]


def _opening(text: str, max_words: int = 150) -> str:
    """The first paragraphs of a section, up to about ``max_words``: a chat answer in the owner's
    words that does not repeat the whole passage the text sample already holds."""
    kept: list[str] = []
    words = 0
    for paragraph in _paragraphs(text):
        if kept and words + len(paragraph.split()) > max_words:
            break
        kept.append(paragraph.strip())
        words += len(paragraph.split())
    return "\n\n".join(kept)


def _fingerprint(text: str) -> str:
    return hashlib.sha256(" ".join(_WORDS.findall(text.lower())).encode()).hexdigest()


def _without_seen_paragraphs(text: str, seen: set[str]) -> tuple[str, int]:
    """``text`` less the paragraphs of 8 words or more whose fingerprint is in ``seen``."""
    kept, dropped = [], 0
    for paragraph in _paragraphs(text):
        if len(_WORDS.findall(paragraph)) >= 8 and _fingerprint(paragraph) in seen:
            dropped += 1
        else:
            kept.append(paragraph.strip())
    return "\n\n".join(kept), dropped


def _samples(relative: str, headings: tuple[str, ...], text: str) -> list[TwinSample]:
    heading_line = f"{'#' * len(headings)} {headings[-1]}\n\n" if headings else ""
    return [
        TwinSample("text", relative, heading_line + text),
        TwinSample("chat", relative, _opening(text), _question(headings, text)),
    ]


def build_dataset(notes_root: Path, seed: int = 0, heldout_fraction: float = 0.1) -> TwinDataset:
    """Samples from every readable note under ``notes_root``; whole files, about ``heldout_fraction``
    of the words, held out (``choose_heldout``).

    Passages repeated word for word are kept once. Notes also repeat each other in part (a long
    note that quotes shorter ones: pydoc's "specialnames" holds whole paragraphs of
    "customization"), so a held-out note also loses every paragraph a training note holds; else
    held-out perplexity would score text the twin was trained on.
    """
    notes_root = Path(notes_root).expanduser()
    read: NotesRead = read_notes(notes_root)
    base = notes_root.parent if notes_root.is_file() else notes_root
    seen: set[str] = set()
    dropped = 0
    sections_by_file: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for note in read.notes:
        relative = str(note.path.relative_to(base))
        sections = sections_by_file.setdefault(relative, [])
        for headings, text in note.sections:
            text = text.strip()
            if len(_WORDS.findall(text)) < 8:
                continue  # a heading with a line under it teaches nothing
            fingerprint = _fingerprint(text)
            if fingerprint in seen:
                dropped += 1
                continue
            seen.add(fingerprint)
            sections.append((headings, text))
    words_by_file = {
        relative: sum(len(_WORDS.findall(text)) for _, text in sections)
        for relative, sections in sections_by_file.items()
    }
    held = choose_heldout(words_by_file, seed, heldout_fraction)
    trained_paragraphs = {
        _fingerprint(paragraph)
        for relative, sections in sections_by_file.items()
        if relative not in held
        for _, text in sections
        for paragraph in _paragraphs(text)
    }
    paragraphs_dropped = 0
    splits: dict[bool, tuple[list[TwinSample], list[str]]] = {False: ([], []), True: ([], [])}
    for relative, sections in sections_by_file.items():
        side_samples, side_files = splits[relative in held]
        side_files.append(relative)
        for headings, text in sections:
            if relative in held:
                text, count = _without_seen_paragraphs(text, trained_paragraphs)
                paragraphs_dropped += count
                if len(_WORDS.findall(text)) < 8:
                    continue
            side_samples.extend(_samples(relative, headings, text))
    if not splits[False][0]:
        raise ConversionError(
            f"the notes in {notes_root} give no training text (each section needs a few sentences)"
        )
    skipped = tuple((str(path), reason) for path, reason in read.skipped)
    return TwinDataset(
        DatasetSplit(tuple(splits[False][0]), tuple(splits[False][1])),
        DatasetSplit(tuple(splits[True][0]), tuple(splits[True][1])),
        skipped,
        dropped,
        paragraphs_dropped,
    )


def render_sample(sample: TwinSample, tokenizer) -> str:
    """A sample as the text the model trains on: chat samples through the model's chat template,
    or, for a base model that ships none (Gemma 3 270M), the turns Lantern chats with it in."""
    if sample.kind == "text":
        return sample.text
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": sample.prompt}, {"role": "assistant", "content": sample.text}],
        tokenize=False,
        chat_template=None if tokenizer.chat_template else _fallback_template(tokenizer),
    )


def _fallback_template(tokenizer) -> str:
    from app.chat_template import fallback_template

    turn = tokenizer.convert_tokens_to_ids("<start_of_turn>")
    return fallback_template("", turn is not None and turn != tokenizer.unk_token_id).source


def pack(samples: tuple[TwinSample, ...], tokenizer, sequence_length: int) -> list[list[int]]:
    """Concatenate the samples' tokens, each ended by EOS, and cut into full sequences: no padding,
    so every token in a batch is trained on. The chat samples come after all the notes' text, so
    an answer never shares a sequence with the passage it repeats (the model would learn to copy
    it from its context rather than to write it)."""
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for sample in sorted(samples, key=lambda s: s.kind != "text"):
        stream += tokenizer.encode(render_sample(sample, tokenizer), add_special_tokens=False) + [eos]
    return [
        stream[i : i + sequence_length] for i in range(0, len(stream) - sequence_length + 1, sequence_length)
    ]


def heldout_text(dataset: TwinDataset) -> str:
    """The held-out notes as one text, for perplexity (the notes themselves, not the chat samples)."""
    return "\n\n".join(s.text for s in dataset.heldout.samples if s.kind == "text")


def save_dataset(
    dataset: TwinDataset, out: Path, tokenizer=None, sequence_length: int = 256, cipher: Cipher | None = None
) -> dict:
    """Write train.jsonl, heldout.jsonl and dataset.json to ``out``: sealed with ``cipher`` (an
    encrypted home), plain otherwise."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    summary = {
        "counts": dataset.counts(),
        "train_files": list(dataset.train.files),
        "heldout_files": list(dataset.heldout.files),
        "skipped": [list(s) for s in dataset.skipped],
    }
    for name, split in (("train", dataset.train), ("heldout", dataset.heldout)):
        lines = "".join(json.dumps(asdict(sample), ensure_ascii=False) + "\n" for sample in split.samples)
        write_private(out / f"{name}.jsonl", lines.encode("utf-8"), cipher)
        if tokenizer is not None:
            tokens = sum(
                len(tokenizer.encode(render_sample(s, tokenizer), add_special_tokens=False)) + 1
                for s in split.samples
            )
            summary["counts"][name]["tokens"] = tokens
            summary["counts"][name]["sequences"] = tokens // sequence_length
    write_private(out / "dataset.json", json.dumps(summary, indent=2).encode("utf-8"), cipher)
    return summary


def load_samples(path: Path, cipher: Cipher | None) -> list[dict]:
    """The samples of a saved split (train.jsonl or heldout.jsonl), opened with ``cipher`` if sealed."""
    return [json.loads(line) for line in read_private(path, cipher).decode("utf-8").splitlines() if line]
