"""Note folders for the memory tests: every supported format, each with one fact to find."""

from __future__ import annotations

import os
from pathlib import Path

FACTS = {
    "trip.md": "The lighthouse at Ploumanac'h is built from pink granite.",
    "garden.org": "Tomatoes on the balcony need six hours of sun and a deep pot.",
    "recipes.html": "The sourdough starter is fed with rye flour every Sunday morning.",
    "tools.txt": "The bench grinder must never be used without the eye shield lowered.",
    "scan.pdf": "The boiler service is booked with Mr Okafor for the third of March.",
}


def write_text_pdf(path: Path, lines: list[str]) -> None:
    """A small but real PDF with one page of Helvetica text (byte offsets computed, not faked)."""
    text_ops = (
        "BT /F1 12 Tf 72 720 Td 14 TL "
        + " ".join(
            "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") '" for line in lines
        )
        + " ET"
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(text_ops) + text_ops.encode("latin-1") + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))


def make_notes(root: Path) -> Path:
    """A folder a user might have: notes in every format, plus files memory must skip."""
    (root / "travel").mkdir(parents=True)
    (root / "home").mkdir()
    (root / "travel" / "trip.md").write_text(
        "# Brittany\n\nWe drove along the pink granite coast.\n\n"
        "## Lighthouses\n\n" + FACTS["trip.md"] + "\n\n## Food\n\nCrêpes with salted butter caramel.\n",
        encoding="utf-8",
    )
    (root / "home" / "garden.org").write_text(
        "#+TITLE: Garden\n* Balcony\n** Tomatoes\n"
        + FACTS["garden.org"]
        + "\n* Herbs\nBasil hates the cold.\n",
        encoding="utf-8",
    )
    (root / "home" / "recipes.html").write_text(
        "<html><head><title>x</title><style>p {color: red}</style></head><body>"
        "<h1>Baking</h1><h2>Bread</h2><p>" + FACTS["recipes.html"] + "</p>"
        "<script>var secret = 'not a note';</script></body></html>",
        encoding="utf-8",
    )
    (root / "home" / "tools.txt").write_text(
        "WORKSHOP SAFETY\n\n" + FACTS["tools.txt"] + "\n", encoding="utf-8"
    )
    write_text_pdf(root / "home" / "scan.pdf", [FACTS["scan.pdf"]])
    (root / "home" / "empty.md").write_bytes(b"")
    (root / "home" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a photo")
    (root / "home" / "report.docx").write_bytes(b"PK\x03\x04")
    (root / "home" / "broken.pdf").write_bytes(b"%PDF-1.4\n this is not a pdf at all")
    (root / "home" / "binary.txt").write_bytes(b"\x00\x01\x02 binary junk \x00")
    os.symlink(root / "home" / "gone.md", root / "home" / "dangling.md")
    return root


SUPPORTED_NOTES = 5  # the files of FACTS
UNSUPPORTED = 2  # photo.jpg, report.docx
UNREADABLE = 3  # broken.pdf, binary.txt, dangling.md
