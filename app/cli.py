"""The `lantern` command line: click commands only; the work happens in app.assistant."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from app.assistant import Assistant
from app.cli_context import assistant_from as _assistant
from app.cli_context import hit_json as _hit_json
from app.conversations import Conversation
from app.errors import LanternError
from app.formatting import describe_model, format_citations, human_bytes


class _LanternGroup(click.Group):
    """Turns a LanternError anywhere below into one clean line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LanternError as exc:
            raise click.ClickException(str(exc)) from None


def _read_prompt(prompt: str | None) -> str:
    if prompt is not None and prompt != "-":
        return prompt
    if sys.stdin.isatty():
        raise LanternError("no prompt given; pass it as an argument or pipe it on stdin")
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LanternError(
            f"the prompt on stdin is not valid UTF-8 (bad byte at position {exc.start}); "
            "convert it to UTF-8 and try again"
        ) from None


def _pick_conversation(
    assistant: Assistant, continue_: bool, conversation_id: str | None
) -> Conversation | None:
    if conversation_id:
        return assistant.conversations.get(conversation_id)
    if continue_:
        latest = assistant.conversations.latest()
        if latest is None:
            raise LanternError("there is no conversation to continue yet; drop --continue")
        return latest
    return None


def _trim_note(dropped: int) -> str:
    return f"note: the {dropped} oldest messages were left out to fit the context window"


generation_options = [
    click.option("--model", "-m", help="Model name from 'lantern models list'."),
    click.option(
        "--twin", help="Answer as your twin (from 'lantern twin list'): its base model plus adapter."
    ),
    click.option("--max-tokens", type=int, help="Longest answer, in tokens."),
    click.option("--temperature", "-t", type=float, help="0 for the most likely answer."),
    click.option("--top-p", type=float, help="Nucleus sampling cut-off, in (0, 1]."),
    click.option("--seed", type=int, help="Fix the random seed for a repeatable answer."),
    click.option(
        "--continue", "-c", "continue_", is_flag=True, help="Continue the most recent conversation."
    ),
    click.option(
        "--conversation", "--cid", "conversation_id", help="Continue the conversation with this id."
    ),
    click.option("--no-memory", is_flag=True, help="Do not look in your notes for this answer."),
]


def _model_or_twin(model: str | None, twin: str | None) -> str | None:
    if model and twin:
        raise LanternError("give --model or --twin, not both (a twin runs on its own base model)")
    return twin or model


def with_generation_options(command):
    for option in reversed(generation_options):
        command = option(command)
    return command


@click.group(cls=_LanternGroup, invoke_without_command=True)
@click.version_option(package_name="lantern")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Lantern: an offline assistant over local GGUF models. With no command, opens the TUI."""
    if ctx.invoked_subcommand is None:
        from tui.app import run_tui

        try:
            assistant = _assistant(ctx)
            if assistant.memory.is_encrypted():
                assistant.memory.has_notes()  # the passphrase is asked now, before the TUI owns the terminal
            assistant.memory.stop_asking()  # from here on a locked memory is an error, never a prompt
        except LanternError as exc:
            run_tui(None, startup_problem=str(exc))  # a clear screen, not a traceback
            raise SystemExit(1) from None
        run_tui(assistant)


@cli.command()
@click.argument("prompt", required=False)
@with_generation_options
@click.option("--system", help="System prompt for a new conversation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.pass_context
def ask(
    ctx,
    prompt,
    model,
    twin,
    max_tokens,
    temperature,
    top_p,
    seed,
    continue_,
    conversation_id,
    no_memory,
    system,
    as_json,
):
    """Answer PROMPT (or stdin), streaming the answer to stdout."""
    model = _model_or_twin(model, twin)
    prompt = _read_prompt(prompt)
    assistant = _assistant(ctx)
    settings = assistant.settings(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    conversation = _pick_conversation(assistant, continue_, conversation_id)
    turn = assistant.ask(
        prompt,
        conversation=conversation,
        model=model,
        system_prompt=system,
        settings=settings,
        use_memory=not no_memory,
    )
    if as_json:
        for _ in turn:
            pass
    else:
        for piece in turn:
            click.echo(piece, nl=False)
        click.echo()
        if turn.citations:
            click.echo(format_citations(turn.citations))
    result = turn.result
    if result is not None and result.dropped_messages and not as_json:
        click.echo(_trim_note(result.dropped_messages), err=True)
    if as_json and result is not None:
        click.echo(
            json.dumps(
                {
                    "text": result.text,
                    "model": turn.model,
                    "conversation_id": turn.conversation.id if turn.conversation else None,
                    "finish_reason": result.finish_reason,
                    "usage": {
                        "prompt_tokens": result.prompt_tokens,
                        "prompt_tokens_evaluated": result.prompt_tokens_evaluated,
                        "completion_tokens": result.completion_tokens,
                    },
                    "dropped_messages": result.dropped_messages,
                    "citations": [_hit_json(hit) for hit in turn.citations],
                    "timings": {
                        "time_to_first_token_s": round(result.time_to_first_token_s, 4),
                        "total_s": round(result.total_s, 4),
                        "decode_tokens_per_s": round(result.decode_tokens_per_s, 2),
                    },
                },
                ensure_ascii=False,
            )
        )


@cli.command()
@with_generation_options
@click.pass_context
def chat(ctx, model, twin, max_tokens, temperature, top_p, seed, continue_, conversation_id, no_memory):
    """A line-based chat for terminals without the TUI. /help lists commands."""
    from app.repl import run_repl

    model = _model_or_twin(model, twin)
    assistant = _assistant(ctx)
    settings = assistant.settings(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    conversation = _pick_conversation(assistant, continue_, conversation_id)
    run_repl(assistant, conversation, model, settings, use_memory=not no_memory)


@cli.group()
def models() -> None:
    """List, add, inspect and remove models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_list(ctx, as_json):
    """The models in the store; * marks the default."""
    assistant = _assistant(ctx)
    entries = assistant.models.list()
    default = assistant.config.default_model
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": e.name,
                        "path": str(e.path),
                        "bundled": e.bundled,
                        "default": e.name == default,
                        "size": e.path.stat().st_size if e.path.is_file() else None,
                    }
                    for e in entries
                ]
            )
        )
        return
    if not entries:
        click.echo("No models yet. Add one with 'lantern models add PATH'.")
        return
    for e in entries:
        size = human_bytes(e.path.stat().st_size) if e.path.is_file() else "missing"
        quant = e.summary.quantization if e.summary else ""
        source = "bundled" if e.bundled else "added"
        marker = "*" if e.name == default else " "
        click.echo(f"{marker} {e.name:<32} {quant:<8} {size:>10}  {source}")


@models.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Name in the store (default: from the file name).")
@click.pass_context
def models_add(ctx, path, name):
    """Validate a GGUF file and copy it into the store."""
    entry = _assistant(ctx).models.add(path, name)
    click.echo(f"Added {entry.name} ({describe_model(entry.summary)}).")


@models.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_info(ctx, name, as_json):
    """Architecture, size, quantization, context and chat template of a model."""
    import dataclasses

    assistant = _assistant(ctx)
    entry, summary = assistant.models.info(name)
    if as_json:
        data = dataclasses.asdict(summary)
        data.update(
            name=entry.name,
            path=str(entry.path),
            bundled=entry.bundled,
            chat_template_source=summary.chat_template_source,
        )
        click.echo(json.dumps(data))
        return
    params = summary.parameter_count
    rows = [
        ("name", entry.name + (" (default)" if entry.name == assistant.config.default_model else "")),
        ("file", f"{entry.path}" + (" (bundled with Lantern)" if entry.bundled else "")),
        ("architecture", summary.architecture),
        ("parameters", f"{params / 1e6:.1f}M ({params:,})"),
        ("quantization", summary.quantization),
        ("context length", f"{summary.context_length} tokens" if summary.context_length else "unknown"),
        ("file size", f"{human_bytes(summary.file_size)} ({summary.file_size:,} bytes)"),
        ("gguf", f"version {summary.gguf_version}, {summary.tensor_count} tensors"),
        ("chat template", summary.chat_template_source),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':<16} {value}")


@models.command("rm")
@click.argument("name")
@click.pass_context
def models_rm(ctx, name):
    """Remove a model (bundled and linked files are never deleted, only unregistered)."""
    entry = _assistant(ctx).models.remove(name)
    click.echo(f"Removed {entry.name}.")


@cli.group(invoke_without_command=True)
@click.pass_context
def conversations(ctx):
    """Saved conversations; with no subcommand, lists the recent ones."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(conversations_list)


@conversations.command("list")
@click.option("--limit", default=20, show_default=True)
@click.pass_context
def conversations_list(ctx, limit):
    rows = _assistant(ctx).conversations.list(limit)
    if not rows:
        click.echo("No conversations yet. Start one with 'lantern ask' or 'lantern chat'.")
    for conversation, count in rows:
        click.echo(f"{conversation.id}  {conversation.updated_at}  {count:>3} msgs  {conversation.title}")


@conversations.command("show")
@click.argument("conversation_id")
@click.pass_context
def conversations_show(ctx, conversation_id):
    conversation = _assistant(ctx).conversations.get(conversation_id)
    click.echo(f"# {conversation.title}  ({conversation.id}, model {conversation.model})")
    for message in conversation.messages:
        click.echo(f"\n[{message.role}]\n{message.content}")


@conversations.command("rm")
@click.argument("conversation_id")
@click.pass_context
def conversations_rm(ctx, conversation_id):
    _assistant(ctx).conversations.delete(conversation_id)
    click.echo(f"Removed conversation {conversation_id}.")


from app.convert_cli import convert, eval_group, quantize  # noqa: E402
from app.memory_cli import memory  # noqa: E402  (the groups register themselves below)
from app.serve_cli import devices, pair, serve  # noqa: E402
from app.tunnel_cli import tunnel  # noqa: E402
from app.twin_cli import twin  # noqa: E402

for command in (memory, serve, pair, devices, tunnel, convert, quantize, eval_group, twin):
    cli.add_command(command)


def main() -> None:
    # Undecodable bytes in a pipe should reach our UTF-8 check, not crash the writer.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        cli.main(prog_name="lantern")
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        sys.exit(130)
