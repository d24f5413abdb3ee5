"""`lantern memory ...`: add notes, keep them in sync, search, forget, encrypt."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from app.cli.context import assistant_from, hit_json
from app.cli.encryption import init
from app.errors import LanternError
from app.memory import cite
from app.sizes import human_bytes
from rag.ingest import SyncReport
from rag.tuning import TuneReport, TuneSettings


class _ProgressBar:
    """A progress bar on stderr while passages are embedded; silent when stderr is not a terminal."""

    def __init__(self) -> None:
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if not sys.stderr.isatty() or total < 2:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="passage", desc="Embedding", file=sys.stderr, leave=False)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _report(report: SyncReport) -> None:
    click.echo(report.summary() + ".")
    for path, reason in report.skipped_unreadable[:20]:
        click.echo(f"  skipped {path}: {reason}", err=True)
    if len(report.skipped_unreadable) > 20:
        click.echo(f"  ... and {len(report.skipped_unreadable) - 20} more unreadable files", err=True)


@click.group()
def memory() -> None:
    """Your notes as memory: add folders, search them, and answers cite them."""


# `lantern memory init --encrypt` is `lantern init --encrypt`: the memory and all else the notes touch.
memory.add_command(init, name="init")


@memory.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def memory_add(ctx, paths):
    """Add files or folders (recursively) to memory and index them."""
    progress = _ProgressBar()
    try:
        report = assistant_from(ctx).memory.add(list(paths), progress)
    finally:
        progress.close()
    _report(report)


@memory.command("sync")
@click.pass_context
def memory_sync(ctx):
    """Re-scan every added folder: index new and changed notes, drop deleted ones."""
    progress = _ProgressBar()
    try:
        report = assistant_from(ctx).memory.sync(progress)
    finally:
        progress.close()
    _report(report)


@memory.command("search")
@click.argument("query", required=False)
@click.option("--k", "k", default=5, show_default=True, help="How many passages.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of hits.")
@click.option(
    "--queries", type=click.File("r", encoding="utf-8"), help="One query per line; a JSON line each."
)
@click.option(
    "--mode",
    type=click.Choice(["hybrid", "dense", "lexical"]),
    default="hybrid",
    show_default=True,
    help="hybrid fuses BM25 and embeddings; the others use one method alone.",
)
@click.option(
    "--per-note",
    type=int,
    default=None,
    help="Passages of one note at most in hybrid results, 0 for no limit [default: memory.per_note, 1].",
)
@click.pass_context
def memory_search(ctx, query, k, as_json, queries, mode, per_note):
    """Find the passages of your notes that best match QUERY."""
    memory_ = assistant_from(ctx).memory
    if queries is not None:
        for line in queries:
            line = line.strip()
            if line:
                hits = memory_.search(line, k, mode, per_note)
                click.echo(
                    json.dumps({"query": line, "hits": [hit_json(h) for h in hits]}, ensure_ascii=False)
                )
        return
    if not query or not query.strip():
        raise LanternError("no query given; pass one, or --queries FILE")
    hits = memory_.search(query, k, mode, per_note)
    if as_json:
        click.echo(json.dumps([hit_json(h) for h in hits], ensure_ascii=False))
        return
    if not hits:
        click.echo("No matches. Add notes with 'lantern memory add PATH'.")
    for n, hit in enumerate(hits, start=1):
        snippet = " ".join(hit.text.split())
        click.echo(f"[{n}] {cite(hit)}  (score {hit.score:.4f})\n    {snippet[:240]}")


@memory.command("list")
@click.pass_context
def memory_list(ctx):
    """The added roots and how many files of each are in memory."""
    store = assistant_from(ctx).memory.store
    if not store.roots:
        click.echo("Memory is empty. Add notes with 'lantern memory add PATH'.")
    for root in store.roots:
        entries = [e for e in store.files.values() if e.root == root]
        chunks = sum(len(e.chunk_ids) for e in entries)
        click.echo(f"{root}  {len(entries)} files, {chunks} chunks")
    for path in store.forgotten:
        click.echo(f"{path}  (forgotten; 'lantern memory add' it to bring it back)")


@memory.command("forget")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_context
def memory_forget(ctx, path):
    """Remove every chunk and vector of PATH (a file or folder); sync will not re-add it."""
    removed = assistant_from(ctx).memory.forget(path)
    click.echo(f"Forgot {removed} file{'s' if removed != 1 else ''} under {path}.")


@memory.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def memory_stats(ctx, as_json):
    """Size, index type, embedder and encryption of the memory."""
    memory_ = assistant_from(ctx).memory
    store = memory_.store
    on_disk = sum(p.stat().st_size for p in store.data_files())
    stats = {
        "directory": str(store.directory),
        "roots": len(store.roots),
        "files": len(store.files),
        "chunks": store.chunk_count,
        "embedder": store.embedder_name or None,
        "dimension": store.dimension or None,
        "index": store.index_description,
        "encrypted": store.cipher is not None,
        "generation": store.generation,
        "bytes_on_disk": on_disk,
    }
    if as_json:
        click.echo(json.dumps(stats))
        return
    for key, value in stats.items():
        if key == "bytes_on_disk":
            value = human_bytes(value)
        elif key == "index":
            value = _index_line(value)
        click.echo(f"{key.replace('_', ' ') + ':':<16} {value}")


def _index_line(index: dict) -> str:
    if index.get("kind") != "ivfpq":
        return ", ".join(f"{k}={v}" for k, v in index.items())
    return (
        f"ivfpq {index['faiss']}, nprobe={index['nprobe']}; recall@10 {index['recall_at_10']:.3f} "
        f"against exact search ({index['recall_queries']} stored passages as queries, "
        f"measured at {index['built_at']:,} passages)"
    )


def _training_step(step: int, steps: int, loss: float) -> None:
    # A line per step, terminal or not: a tune runs for minutes and should be seen to move.
    click.echo(f"Training step {step}/{steps}, loss {loss:.3f}", err=True)


def _tune_summary(report: TuneReport) -> str:
    lines = [
        f"Pairs: {report.pairs} from {report.notes} notes; {report.held_out_pairs} held out "
        f"(from {report.held_out_notes} notes) to measure on. Trained {report.steps} steps.",
        f"Held-out MRR@10: {report.before.mrr:.3f} -> {report.after.mrr:.3f} "
        f"(recall@1 {report.before.recall_at_1:.3f} -> {report.after.recall_at_1:.3f}).",
    ]
    if report.adopted:
        lines.append(
            f"Adopted: {report.reencoded} passages re-encoded with {report.embedder}. "
            "'lantern memory tune --rollback' goes back."
        )
    else:
        lines.append(f"Kept {report.embedder}: the tuned embedder did not find the held-out pairs better.")
    return "\n".join(lines)


@memory.command("tune")
@click.option("--rollback", is_flag=True, help="Go back to the embedder the tune started from.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@click.option(
    "--minutes",
    type=click.FloatRange(min=0.1),
    help="Train at most this long (default: memory.tune_minutes).",
)
@click.pass_context
def memory_tune(ctx, rollback, as_json, minutes):
    """Fine-tune the embedder on pairs made from your notes; adopted only if it measures better."""
    assistant = assistant_from(ctx)
    progress = _ProgressBar()
    try:
        if rollback:
            count = assistant.memory.rollback_tune(progress)
            name = assistant.memory.embedder.name
            if as_json:
                click.echo(json.dumps({"embedder": name, "reencoded": count}))
            else:
                click.echo(f"Rolled back: {count} passages re-encoded with {name}.")
            return
        config = assistant.config.memory
        settings = TuneSettings(max_minutes=minutes if minutes is not None else config.tune_minutes)
        report = assistant.memory.tune(settings, _training_step, progress)
    finally:
        progress.close()
    click.echo(json.dumps(dataclasses.asdict(report)) if as_json else _tune_summary(report))


@memory.command("remember-chat")
@click.argument("conversation_id")
@click.pass_context
def memory_remember_chat(ctx, conversation_id):
    """Save a conversation into memory so later answers can draw on it."""
    assistant = assistant_from(ctx)
    conversation = assistant.conversations.get(conversation_id)
    chunks = assistant.memory.remember_chat(conversation)
    click.echo(f"Remembered conversation {conversation.id} ({chunks} chunks).")


__all__ = ["memory"]
