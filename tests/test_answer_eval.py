"""Answers worth reading: loops are recognised, the repetition guard is in every answer's sampler
chain, and `lantern eval answers` scores whole answers as `lantern ask` gives them."""

from __future__ import annotations

import json
import re

import llama_cpp
import pytest

from app.answer_eval import contains_fact, read_questions
from app.config import parse_config
from app.decoding import GenerationSettings, make_sampler
from app.errors import LanternError
from app.loops import find_loop
from tests.conftest import lantern_at
from tests.memory_fixtures import make_notes

# --- the loop detector ---------------------------------------------------------------------

TR = "The tr command translates characters read from standard input."

LOOPING = {
    "a sentence until the token limit": "Use the tr command. " + TR * 9 + " The tr comm",
    "numbered steps that say the same": "Steps:\n"
    + "".join(f"{n}. Open the terminal and type the command.\n" for n in range(1, 12)),
    "one word over and over": "The answer is " + "very " * 40,
    "a sentence said again between others": (
        f"{TR} It takes two sets. {TR} Use quotes around the sets. {TR} That is all you need."
    ),
    "a pair of lines repeated": "```\n" + "echo hello | tr a-z A-Z\nHELLO\n" * 8 + "```",
    "an empty code fence until the limit": "Output:\n\n" + "```\n\n" * 60,
}

LANGUAGES = ["Pygame", "PEP 343", "C++11", "ANSI C", "Java", "Rust", "Go", "Perl", "Ruby", "Haskell"]
CIRCLING = "The with statement is a context manager.\n\n" + "".join(
    f"The with statement is part of {x}, and it is part of {x}.\n\n" for x in LANGUAGES * 2
)
PHOTOSYNTHESIS = (
    "Photosynthesis is how plants make food. Leaves take in carbon dioxide from the air through small "
    "pores called stomata, and roots draw water up from the soil. Chlorophyll, the green pigment in the "
    "leaf, absorbs sunlight. The plant uses that energy to split water into hydrogen and oxygen; the "
    "oxygen leaves through the stomata. The hydrogen and the carbon dioxide are then joined into glucose "
    "in a cycle of reactions named after Melvin Calvin. Glucose feeds the plant and is stored as starch. "
    "Almost all life on Earth depends on this process, because animals eat plants or eat animals that "
    "ate plants, and the oxygen we breathe comes from it.\n\nThere are two stages. The light-dependent "
    "reactions happen in the thylakoid membranes, where light excites electrons and makes ATP and NADPH. "
    "The light-independent reactions happen in the stroma: enzymes such as RuBisCO fix carbon from the "
    "air into sugars, spending that ATP and NADPH. Some plants in hot, dry places, like maize and cacti, "
    "have extra steps (C4 and CAM) that save water by opening their stomata at night or concentrating "
    "carbon dioxide around RuBisCO, which"
)

NOT_LOOPING = {
    "a numbered list": (
        "Five tips for better sleep:\n\n1. **Keep a schedule**: bed at the same time every night.\n"
        "2. **Avoid screens**: put the phone away an hour before bed.\n3. **Keep it cool**: about "
        "18 °C.\n4. **Limit caffeine**: no coffee after lunch.\n5. **Move**: exercise in the day.\n"
    ),
    "a table of figures": "| n | n² | n³ |\n|---|---|---|\n"
    + "".join(f"| {n} | {n * n} | {n**3} |\n" for n in range(1, 21)),
    "a table with a repeated column": "| Day | Open | Close |\n|---|---|---|\n"
    + "".join(f"| {d} | 9:00 | 17:00 |\n" for d in ("Mon", "Tue", "Wed", "Thu", "Fri")),
    "code with similar lines": (
        "```python\nprint(is_palindrome('racecar'))\nprint(is_palindrome('hello'))\n"
        "print(is_palindrome('A man, a plan, a canal: Panama'))\n```"
    ),
    "a short answer": "Paris.",
    "emphasis": "It is very, very, very important to back up your files before you upgrade.",
}


@pytest.mark.parametrize("name", LOOPING)
def test_answers_that_repeat_themselves_are_loops(name):
    assert find_loop(LOOPING[name]) is not None, name


@pytest.mark.parametrize("name", NOT_LOOPING)
def test_lists_tables_and_code_that_repeat_a_shape_are_not_loops(name):
    assert find_loop(NOT_LOOPING[name]) is None, find_loop(NOT_LOOPING[name])


PACKING = "Packing list:\n" + "".join(
    f"- 1 day of {thing} (e.g. {thing} facilities, {thing} rooms)\n"
    for thing in "sleep cleanup relaxation souvenirs breakfast meals food clothing towels games books".split()
)


def test_a_list_that_fills_one_template_until_the_limit_is_a_loop():
    loop = find_loop(PACKING, hit_limit=True)
    assert loop is not None and loop.kind == "template" and loop.unit == "# day"
    assert find_loop(PACKING) is None


def test_an_answer_cut_by_the_limit_while_circling_is_a_loop_and_a_finished_one_is_not():
    loop = find_loop(CIRCLING, hit_limit=True)
    assert loop is not None and loop.kind == "ramble"
    assert find_loop(CIRCLING) is None  # it ended by itself: verbose, not stuck
    assert find_loop(PHOTOSYNTHESIS, hit_limit=True) is None  # cut off, but saying new things


def test_a_loop_names_what_is_repeated_and_how_often():
    loop = find_loop(LOOPING["a sentence until the token limit"])
    assert loop.kind == "tandem"
    assert loop.unit == "the tr command translates characters read from standard input"
    assert loop.copies == 9


def test_a_fact_is_found_as_whole_words_ignoring_case_and_markdown():
    assert contains_fact("Run `TR '[:lower:]' '[:upper:]'` on it.", ("tr [:lower:] [:upper:]",))
    assert contains_fact("the lighthouse is built from Pink Granite.", ("pink granite",))
    assert not contains_fact("a string of text", ("tr",))
    assert contains_fact("use sort -u", ("uniq", "sort -u"))


# --- the repetition guard ------------------------------------------------------------------


def _chain_names(sampler) -> list[str]:
    names = []
    for i in range(llama_cpp.llama_sampler_chain_n(sampler)):
        names.append(llama_cpp.llama_sampler_name(llama_cpp.llama_sampler_chain_get(sampler, i)).decode())
    llama_cpp.llama_sampler_free(sampler)
    return names


def test_the_repetition_guard_leads_the_sampler_chain_by_default_and_off_removes_it(engine):
    vocab = engine.llm._model.vocab
    assert _chain_names(make_sampler(GenerationSettings(), vocab))[0] == "penalties"
    assert _chain_names(make_sampler(GenerationSettings(temperature=0), vocab)) == ["penalties", "greedy"]
    assert _chain_names(make_sampler(GenerationSettings(repetition_guard="dry"), vocab))[0] == "dry"
    off = _chain_names(make_sampler(GenerationSettings(repetition_guard="off"), vocab))
    assert "dry" not in off and "penalties" not in off


def test_the_config_sets_the_guard_for_every_answer():
    config = parse_config('[generation]\nrepetition_guard = "off"\n')
    assert config.generation.repetition_guard == "off"
    assert parse_config("").generation.repetition_guard == GenerationSettings().repetition_guard
    with pytest.raises(LanternError, match="generation.repetition_guard must be one of penalty, dry, off"):
        parse_config('[generation]\nrepetition_guard = "strong"\n')


# --- lantern eval answers ------------------------------------------------------------------

QUESTIONS = [
    {"question": "What is the lighthouse at Ploumanac'h built from?", "expected": "pink granite"},
    {"question": "What must the bench grinder never be used without?", "expected": ["eye shield"]},
    {"question": "When is the boiler service booked?", "expected": ["third of March", "3 March"]},
]


@pytest.fixture(scope="module")
def notes_home(tmp_path_factory):
    """A data home whose memory holds the notes fixture; short answers keep the module quick."""
    root = tmp_path_factory.mktemp("eval-answers")
    home = root / "home"
    home.mkdir()
    (home / "config.toml").write_text("[generation]\nmax_tokens = 24\n", encoding="utf-8")
    added = lantern_at(home, "memory", "add", str(make_notes(root / "notes")))
    assert added.returncode == 0, added.stderr
    questions = root / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n\n", encoding="utf-8")
    return home, questions


def test_eval_answers_scores_answers_from_the_notes_as_json(notes_home):
    home, questions = notes_home
    result = lantern_at(home, "eval", "answers", str(questions), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = report["answers"]
    assert report["model"] == "smollm2-135m-instruct" and report["memory"] is True
    assert report["questions"] == len(rows) == 3
    assert [row["line"] for row in rows] == [1, 2, 3]
    assert [row["expected"] for row in rows] == [
        ["pink granite"],
        ["eye shield"],
        ["third of March", "3 March"],
    ]
    for row in rows:
        assert row["has_fact"] == contains_fact(row["answer"], tuple(row["expected"]))
        assert row["completion_tokens"] <= 24
    assert report["with_fact"] == sum(row["has_fact"] for row in rows)
    assert report["citations"] == sum(len(row["citations"]) for row in rows) > 0
    assert report["answers_citing"] == sum(bool(row["citations"]) for row in rows)
    assert report["citations_with_fact"] == sum(c["holds_fact"] for row in rows for c in row["citations"])
    assert report["citation_share"] == report["citations_with_fact"] / report["citations"]
    assert report["looping"] == sum(row["loop"] is not None for row in rows)
    # The passage about the lighthouse is cited for the lighthouse question, and holds the fact.
    assert any(c["holds_fact"] and "trip.md" in c["cite"] for c in rows[0]["citations"])
    # Scoring is not chatting: no conversation was saved.
    listed = lantern_at(home, "conversations")
    assert listed.returncode == 0 and "lighthouse" not in listed.stdout


def test_eval_answers_without_memory_prints_a_table_with_no_sources(notes_home):
    home, questions = notes_home
    result = lantern_at(home, "eval", "answers", str(questions), "--no-memory")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "smollm2-135m-instruct, memory off, 3 questions" in out
    assert "answers with the expected fact" in out
    assert "cited passages holding it        0/0  -  (passages cited by 0 answers)" in out
    assert "answers that fall into a loop" in out
    assert "What is the lighthouse at Ploumanac'h built from?" in out


BAD_FILES = [
    (b'{"question": "a?", "expected": "b"}\n{"question": "c?", "expected": \n', "line 2 is not valid JSON"),
    (b'{"question": "a?"}\n', 'line 1 has no "expected"'),
    (b'{"question": "caf\xe9?", "expected": "b"}\n', "line 1 is not valid UTF-8"),
]


@pytest.mark.parametrize("content, message", [(None, "cannot read the questions file"), *BAD_FILES])
def test_a_bad_questions_file_gets_one_clear_line_naming_the_line(tmp_path, content, message):
    path = tmp_path / "questions.jsonl"
    if content is not None:
        path.write_bytes(content)
    result = lantern_at(tmp_path / "home", "eval", "answers", str(path))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        *BAD_FILES,
        (b'\n{"expected": "b"}\n', 'line 2 has no "question"'),
        (b'{"question": "a?", "expected": 3}\n', 'line 1: "expected" must be a fact'),
        (b'{"question": "a?", "expected": ["", "b"]}\n', 'line 1: "expected" must be a fact'),
        (b'["a?", "b"]\n', "line 1 must be a JSON object"),
        (b"\n\n", "holds no questions"),
    ],
)
def test_every_problem_in_a_questions_file_is_named_with_its_line(tmp_path, content, message):
    path = tmp_path / "questions.jsonl"
    path.write_bytes(content)
    with pytest.raises(LanternError, match=re.escape(message)):
        read_questions(path)
