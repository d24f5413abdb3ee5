"""How notes are cut into passages: along their structure first, bounded, with overlap."""

from __future__ import annotations

from pathlib import Path

from rag.chunking import MAX_WORDS, OVERLAP_WORDS, chunk_sections
from rag.documents import Section, load_sections


def test_markdown_headings_become_the_heading_path_and_code_fences_are_not_headings():
    text = "# Trip\nintro\n\n## Day 1\nwalked\n\n```\n# not a heading\n```\n\nSetext\n------\nunder it\n"
    sections = load_sections(Path("n.md"), text.encode())
    assert [(s.headings, s.text.split()[0]) for s in sections] == [
        (("Trip",), "intro"),
        (("Trip", "Day 1"), "walked"),
        (("Trip", "Setext"), "under"),
    ]
    assert "# not a heading" in sections[1].text


def test_man_page_and_underlined_titles_in_plain_text():
    man = "NAME\n       tar - an archiving utility\n\nDESCRIPTION\n       GNU tar saves many files.\n"
    assert [s.headings for s in load_sections(Path("tar.txt"), man.encode())] == [("Name",), ("Description",)]
    rst = "The if statement\n****************\n\nIt selects.\n\nElse\n====\n\nOtherwise.\n"
    assert [s.headings for s in load_sections(Path("if.txt"), rst.encode())] == [
        ("The if statement",),
        ("The if statement", "Else"),
    ]


def test_a_bad_byte_does_not_cost_the_rest_of_the_note():
    sections = load_sections(Path("n.txt"), b"caf\xe9 au lait\n\nthen the rest of the note")
    assert "then the rest of the note" in sections[0].text and "\ufffd" in sections[0].text


def test_long_sections_are_cut_into_bounded_overlapping_passages():
    words = [f"w{i}" for i in range(1000)]
    paragraphs = "\n\n".join(" ".join(words[i : i + 50]) for i in range(0, 1000, 50))
    chunks = chunk_sections([Section(("Long",), paragraphs)])
    assert len(chunks) > 1 and all(c.headings == ("Long",) for c in chunks)
    assert all(len(c.text.split()) <= MAX_WORDS for c in chunks)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.text.split()[-OVERLAP_WORDS:] == after.text.split()[:OVERLAP_WORDS]
    covered = {w for c in chunks for w in c.text.split()}
    assert covered == set(words)


def test_one_huge_paragraph_is_windowed_with_overlap():
    text = " ".join(f"x{i}" for i in range(500))
    chunks = chunk_sections([Section((), text)])
    assert all(len(c.text.split()) <= MAX_WORDS for c in chunks)
    assert chunks[1].text.split()[0] == f"x{MAX_WORDS - OVERLAP_WORDS}"
    assert chunks[-1].text.split()[-1] == "x499"
