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


# The owner's shorthand: each thing they look after goes by a nickname, in headings only; the
# passages say what it is. A stock embedder cannot know that "Whisper" is the bicycle; a tune on
# these notes can learn it, and finds the held-out notes' sections by their headings better.
NICKNAMES = {
    "Bluebird": (
        "the car",
        ["brake pads", "wipers", "battery", "clutch", "exhaust"],
        "the garage on Mill Road",
    ),
    "Whisper": (
        "the bicycle",
        ["chain", "saddle", "brake cables", "inner tube", "derailleur"],
        "the bike shop",
    ),
    "Marigold": (
        "the sailing boat",
        ["jib", "bilge pump", "tiller", "mooring line", "outboard"],
        "the boatyard",
    ),
    "The Den": (
        "the garden shed",
        ["roof felt", "door hinge", "workbench", "window putty", "padlock"],
        "the timber yard",
    ),
    "Old Tom": (
        "the grandfather clock",
        ["pendulum", "chime hammer", "winding key", "weight cord", "dial"],
        "the clockmaker",
    ),
    "Snowdrop": (
        "the caravan",
        ["awning", "tow hitch", "gas bottle", "water pump", "roof vent"],
        "the campsite office",
    ),
}
ASPECTS = {
    "Repairs": [
        "The {part} on {noun} gave out again this week. I took it to {place} and they fitted a new one "
        "for {price} pounds.",
        "Fixed the {part} of {noun} myself on Sunday. It took {hours} hours and a borrowed tool "
        "from {place}.",
    ],
    "Cleaning": [
        "Spent the morning cleaning {noun} from end to end. The {part} was filthy and needed a proper scrub.",
        "Gave {noun} a wash before the visitors came. Used the brush from {place} on the {part}.",
    ],
    "Costs": [
        "Added up what {noun} cost me this season. The {part} alone came to {price} pounds, plus the "
        "bill from {place}.",
        "Money spent on {noun} this year is creeping up. A new {part} was {price} pounds at {place}.",
    ],
    "Winter": [
        "For the cold months {noun} stays covered near {place}. I loosened the {part} so it does not seize.",
        "Got {noun} ready for frost this week. The {part} is wrapped and {place} has a spare key.",
    ],
    "Checks": [
        "Went over {noun} before the long weekend. The {part} looked worn, so I booked {place} for "
        "next month.",
        "Quick check of {noun} after the storm. The {part} survived, and {place} says it has {hours} "
        "years left.",
    ],
    "Plans": [
        "Next spring I want to upgrade the {part} on {noun}. The people at {place} say it is worth doing.",
        "One day {noun} deserves a better {part}. I keep a folder of prices from {place} for it.",
    ],
}


def make_owner_notes(root: Path, notes_per_thing: int = 6, seed: int = 7) -> Path:
    """A diary of looking after six things, one note per visit: `# <nickname>`, then three
    `## <aspect>` sections of two sentences each."""
    import random

    rng = random.Random(seed)
    root.mkdir(parents=True)
    number = 0
    for nickname, (noun, parts, place) in NICKNAMES.items():
        for _ in range(notes_per_thing):
            number += 1
            sections = [f"# {nickname}"]
            for aspect in rng.sample(sorted(ASPECTS), 3):
                template = rng.choice(ASPECTS[aspect])
                text = template.format(
                    noun=noun,
                    part=rng.choice(parts),
                    place=place,
                    price=rng.randint(12, 400),
                    hours=rng.randint(2, 9),
                )
                sections += [f"## {aspect}", text[0].upper() + text[1:]]
            (root / f"log-{number:02}.md").write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return root
