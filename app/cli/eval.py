"""`lantern eval answers`: whole answers to a questions file, scored (app/answer_eval.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from app.answer_eval import AnswerReport, evaluate_answers, read_questions, report_json
from app.cli.context import assistant_from
from app.cli.options import model_or_twin


def _percent(count: int, of: int) -> str:
    return f"{count}/{of}  {count / of:.0%}" if of else f"{count}/{of}  -"


def _table(report: AnswerReport) -> str:
    n = len(report.rows)
    lines = [
        f"{report.model}, memory {'on' if report.memory else 'off'}, {n} questions",
        f"{'line':>4}  {'fact':<4}  {'sources with it':<15}  {'loop':<4}  question",
    ]
    for row in report.rows:
        held = sum(c.holds_fact for c in row.citations)
        sources = f"{held}/{len(row.citations)}" if row.citations else "-"
        question = row.question.question
        question = question if len(question) <= 60 else question[:59] + "…"
        lines.append(
            f"{row.question.line:>4}  {'yes' if row.has_fact else 'no':<4}  {sources:<15}  "
            f"{'yes' if row.loop else 'no':<4}  {question}"
        )
    lines += [
        "",
        f"answers with the expected fact   {_percent(report.with_fact, n)}",
        f"cited passages holding it        {_percent(report.citations_with_fact, report.citations)}"
        f"  (passages cited by {report.citing} answers)",
        f"answers that fall into a loop    {_percent(report.looping, n)}",
    ]
    return "\n".join(lines)


@click.command("answers")
@click.argument("questions_file", metavar="QUESTIONS.jsonl", type=click.Path(path_type=Path))
@click.option("--model", "-m", help="Model name from 'lantern models list', or a path to a .gguf file.")
@click.option("--twin", help="Answer as this twin (its base model plus adapter).")
@click.option("--no-memory", is_flag=True, help="Answer without looking in your notes.")
@click.option("--json", "as_json", is_flag=True, help="One JSON report with every answer.")
@click.pass_context
def answers(ctx, questions_file, model, twin, no_memory, as_json):
    """Answer each question as 'lantern ask' would and score the answers: the share that state the
    expected fact, the share of cited passages that hold it, the share that fall into a loop.

    Each line of QUESTIONS.jsonl: {"question": "...", "expected": "fact" or ["fact", "other wording"]}.
    """
    model = model_or_twin(model, twin)
    questions = read_questions(questions_file)
    assistant = assistant_from(ctx)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            click.echo(f"\ranswering {done + 1}/{total}...", err=True, nl=False)

    report = evaluate_answers(assistant, questions, model=model, use_memory=not no_memory, progress=progress)
    if sys.stderr.isatty():
        click.echo("\r" + " " * 30 + "\r", err=True, nl=False)
    if as_json:
        click.echo(json.dumps(report_json(report), ensure_ascii=False))
    else:
        click.echo(_table(report))
