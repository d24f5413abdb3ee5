"""Whole answers, scored: does the answer state the expected fact, do the passages it cites hold
it, and did it fall into a loop. Lets a user choose a model, a quantization or a twin by what it
answers, not only by its perplexity (`lantern eval answers`).

A questions file has one JSON object per line: ``{"question": ..., "expected": "fact"}`` or
``"expected": ["one way to say it", "another"]``; blank lines are skipped. A fact is found when
its words appear in the text, in order and next to each other, ignoring case, punctuation and
Markdown ("`TR` '[:lower:]'" holds "tr lower").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.assistant import Assistant
from app.errors import LanternError
from app.loops import Loop, find_loop
from app.memory import cite

_TOKEN = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class EvalQuestion:
    line: int  # in the questions file, from 1
    question: str
    expected: tuple[str, ...]  # any one of them counts


@dataclass(frozen=True)
class CitedPassage:
    cite: str  # "file › heading", as the answer's Sources list it
    holds_fact: bool


@dataclass(frozen=True)
class ScoredAnswer:
    question: EvalQuestion
    answer: str
    finish_reason: str
    completion_tokens: int
    has_fact: bool
    citations: list[CitedPassage]
    loop: Loop | None


@dataclass
class AnswerReport:
    model: str
    memory: bool
    rows: list[ScoredAnswer] = field(default_factory=list)

    @property
    def with_fact(self) -> int:
        return sum(row.has_fact for row in self.rows)

    @property
    def citing(self) -> int:
        """Answers that cite at least one passage."""
        return sum(bool(row.citations) for row in self.rows)

    @property
    def citations(self) -> int:
        return sum(len(row.citations) for row in self.rows)

    @property
    def citations_with_fact(self) -> int:
        return sum(c.holds_fact for row in self.rows for c in row.citations)

    @property
    def looping(self) -> int:
        return sum(row.loop is not None for row in self.rows)

    def share(self, count: int, of: int) -> float | None:
        return count / of if of else None


def _words(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def contains_fact(text: str, expected: tuple[str, ...]) -> bool:
    """True when one of the ``expected`` phrases is in ``text`` as a run of whole words."""
    words = _words(text)
    for phrase in expected:
        target = _words(phrase)
        if not target:
            continue
        for i in range(len(words) - len(target) + 1):
            if words[i : i + len(target)] == target:
                return True
    return False


def read_questions(path: Path) -> list[EvalQuestion]:
    """The questions of a file; a problem raises LanternError naming the file and the line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LanternError(f"cannot read the questions file {path}: {exc.strerror}") from None
    questions = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{path} line {number}"
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise LanternError(f"{where} is not valid UTF-8; save the file as UTF-8") from None
        if not text:
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LanternError(f"{where} is not valid JSON ({exc.msg}, column {exc.colno})") from None
        questions.append(_question(item, number, where))
    if not questions:
        raise LanternError(f"{path} holds no questions; write one JSON object per line")
    return questions


def _question(item: object, number: int, where: str) -> EvalQuestion:
    if not isinstance(item, dict):
        raise LanternError(f'{where} must be a JSON object with "question" and "expected"')
    for key in ("question", "expected"):
        if key not in item:
            raise LanternError(f'{where} has no "{key}"; each line needs "question" and "expected"')
    question, expected = item["question"], item["expected"]
    if not isinstance(question, str) or not question.strip():
        raise LanternError(f'{where}: "question" must be a non-empty string')
    if isinstance(expected, str):
        expected = [expected]
    if (
        not isinstance(expected, list)
        or not expected
        or not all(isinstance(e, str) and _words(e) for e in expected)
    ):
        raise LanternError(f'{where}: "expected" must be a fact (a string with words) or a list of them')
    return EvalQuestion(number, question, tuple(expected))


def evaluate_answers(
    assistant: Assistant,
    questions: list[EvalQuestion],
    *,
    model: str | None = None,
    use_memory: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> AnswerReport:
    """Answer every question as `lantern ask` would (same settings, same memory), without saving
    the exchanges as conversations, and score the answers."""
    settings = assistant.settings()
    report = AnswerReport(model=assistant.model_key(model), memory=use_memory)
    for done, question in enumerate(questions):
        if progress is not None:
            progress(done, len(questions))
        turn = assistant.ask(question.question, model=model, settings=settings, use_memory=use_memory)
        for _ in turn.stream:  # the turn itself would save the exchange
            pass
        result = turn.stream.result
        assert result is not None
        report.rows.append(
            ScoredAnswer(
                question=question,
                answer=result.text,
                finish_reason=result.finish_reason,
                completion_tokens=result.completion_tokens,
                has_fact=contains_fact(result.text, question.expected),
                citations=[
                    CitedPassage(cite(hit), contains_fact(f"{hit.heading}\n{hit.text}", question.expected))
                    for hit in turn.citations
                ],
                loop=find_loop(result.text, hit_limit=result.finish_reason == "length"),
            )
        )
    return report


def report_json(report: AnswerReport) -> dict:
    """The machine-readable report: totals, shares (null where nothing to share) and every answer."""
    n = len(report.rows)
    return {
        "model": report.model,
        "memory": report.memory,
        "questions": n,
        "with_fact": report.with_fact,
        "fact_share": report.share(report.with_fact, n),
        "answers_citing": report.citing,
        "citations": report.citations,
        "citations_with_fact": report.citations_with_fact,
        "citation_share": report.share(report.citations_with_fact, report.citations),
        "looping": report.looping,
        "loop_share": report.share(report.looping, n),
        "answers": [
            {
                "line": row.question.line,
                "question": row.question.question,
                "expected": list(row.question.expected),
                "answer": row.answer,
                "finish_reason": row.finish_reason,
                "completion_tokens": row.completion_tokens,
                "has_fact": row.has_fact,
                "citations": [{"cite": c.cite, "holds_fact": c.holds_fact} for c in row.citations],
                "loop": None
                if row.loop is None
                else {"kind": row.loop.kind, "unit": row.loop.unit, "copies": row.loop.copies},
            }
            for row in report.rows
        ],
    }
