"""Loaders: turn a note file into sections of text, each under its heading path."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path


@dataclass(frozen=True)
class Section:
    headings: tuple[str, ...]  # outermost first; empty for text before any heading
    text: str


class UnreadableFile(Exception):
    """The file has a supported type but its contents cannot be read as notes."""


SUPPORTED_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".text", ".org", ".html", ".htm", ".pdf"})


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def load_sections(path: Path, data: bytes) -> list[Section]:
    """Sections of ``data`` (the bytes of ``path``), parsed by the file's type."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return _pdf_sections(data)
    text = _decode_text(data)
    if suffix in (".md", ".markdown"):
        return _markdown_sections(text)
    if suffix == ".org":
        return _org_sections(text)
    if suffix in (".html", ".htm"):
        return _html_sections(text)
    return _plain_text_sections(text)


def _decode_text(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise UnreadableFile("binary data in a text file")
    # A stray bad byte should not cost the user a whole note: keep the rest, mark the byte.
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


class _HeadingStack:
    """Collects lines under the current heading path."""

    def __init__(self) -> None:
        self.path: list[tuple[int, str]] = []
        self.lines: list[str] = []
        self.sections: list[Section] = []

    def heading(self, level: int, title: str) -> None:
        self.flush()
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, title.strip()))

    def line(self, line: str) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        text = "\n".join(self.lines).strip()
        if text:
            self.sections.append(Section(tuple(title for _, title in self.path), text))
        self.lines = []

    def done(self) -> list[Section]:
        self.flush()
        return self.sections


_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SETEXT = re.compile(r"^(=+|-+)\s*$")


def _markdown_sections(text: str) -> list[Section]:
    stack = _HeadingStack()
    lines = text.split("\n")
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            stack.line(line)
            continue
        match = None if in_fence else _ATX.match(line)
        if match:
            stack.heading(len(match.group(1)), match.group(2))
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if not in_fence and line.strip() and _SETEXT.match(following) and not _SETEXT.match(line):
            stack.heading(1 if following.startswith("=") else 2, line)
            continue
        if not in_fence and _SETEXT.match(line) and i > 0 and lines[i - 1].strip():
            continue  # the underline of a setext heading
        stack.line(line)
    return stack.done()


_ORG_HEADING = re.compile(r"^(\*+)\s+(.*)$")
_ORG_TITLE = re.compile(r"^#\+title:\s*(.*)$", re.IGNORECASE)


def _org_sections(text: str) -> list[Section]:
    stack = _HeadingStack()
    for line in text.split("\n"):
        if title := _ORG_TITLE.match(line):
            stack.heading(0, title.group(1))
        elif heading := _ORG_HEADING.match(line):
            stack.heading(len(heading.group(1)), heading.group(2))
        elif not line.startswith("#+"):
            stack.line(line)
    return stack.done()


_UNDERLINE = re.compile(r"^([=\-*~^#+])\1{2,}\s*$")
_MAN_HEADING = re.compile(r"^[A-Z][A-Z0-9 ,/&()-]{1,40}$")


def _plain_text_sections(text: str) -> list[Section]:
    """Plain text with reStructuredText-style underlined titles or man-page section names."""
    stack = _HeadingStack()
    lines = text.split("\n")
    underline_levels: dict[str, int] = {}
    skip_next = False
    for i, line in enumerate(lines):
        if skip_next:
            skip_next = False
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        underline = _UNDERLINE.match(following)
        if line.strip() and underline and len(following.strip()) >= len(line.strip()) // 2:
            char = underline.group(1)
            level = underline_levels.setdefault(char, len(underline_levels) + 1)
            stack.heading(level, line)
            skip_next = True
        elif _MAN_HEADING.match(line) and not line.startswith(" ") and len(line.split()) <= 4:
            stack.heading(1, line.title())
        else:
            stack.line(line)
    return stack.done()


class _HtmlText(HTMLParser):
    _BLOCKS = frozenset({"p", "div", "li", "pre", "tr", "br", "section", "article", "blockquote", "dd", "dt"})
    _SKIPPED = frozenset({"script", "style", "head", "noscript", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack = _HeadingStack()
        self._heading_level = 0
        self._heading_text: list[str] = []
        self._skipping = 0
        self._current: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIPPED:
            self._skipping += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._end_block()
            self._heading_level, self._heading_text = int(tag[1]), []
        elif tag in self._BLOCKS:
            self._end_block()

    def handle_endtag(self, tag):
        if tag in self._SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self._heading_level:
            self.stack.heading(self._heading_level, " ".join("".join(self._heading_text).split()))
            self._heading_level = 0
        elif tag in self._BLOCKS:
            self._end_block()

    def handle_data(self, data):
        if self._skipping:
            return
        if self._heading_level:
            self._heading_text.append(data)
        else:
            self._current.append(data)

    def _end_block(self) -> None:
        text = " ".join("".join(self._current).split())
        if text:
            self.stack.line(text)
            self.stack.line("")
        self._current = []

    def sections(self) -> list[Section]:
        self._end_block()
        return self.stack.done()


def _html_sections(text: str) -> list[Section]:
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    return parser.sections()


def _pdf_sections(data: bytes) -> list[Section]:
    import io

    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadableFile("the PDF is password-protected")
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").strip()
            if text:
                sections.append(Section((f"page {number}",), text))
        return sections
    except UnreadableFile:
        raise
    except Exception as exc:  # pypdf raises many kinds (IndexError, AttributeError...) on bad files
        raise UnreadableFile(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
