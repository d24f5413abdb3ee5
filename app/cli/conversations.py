"""`lantern conversations ...`: list, show and remove saved conversations."""

from __future__ import annotations

import click

from app.cli.context import assistant_from


@click.group(invoke_without_command=True)
@click.pass_context
def conversations(ctx):
    """Saved conversations; with no subcommand, lists the recent ones."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(conversations_list)


@conversations.command("list")
@click.option("--limit", default=20, show_default=True)
@click.pass_context
def conversations_list(ctx, limit):
    rows = assistant_from(ctx).conversations.list(limit)
    if not rows:
        click.echo("No conversations yet. Start one with 'lantern ask' or 'lantern chat'.")
    for conversation, count in rows:
        click.echo(f"{conversation.id}  {conversation.updated_at}  {count:>3} msgs  {conversation.title}")


@conversations.command("show")
@click.argument("conversation_id")
@click.pass_context
def conversations_show(ctx, conversation_id):
    conversation = assistant_from(ctx).conversations.get(conversation_id)
    click.echo(f"# {conversation.title}  ({conversation.id}, model {conversation.model})")
    for message in conversation.messages:
        cut = "\n[cut]" if message.is_cut else ""
        click.echo(f"\n[{message.role}]\n{message.content}{cut}")


@conversations.command("rm")
@click.argument("conversation_id")
@click.pass_context
def conversations_rm(ctx, conversation_id):
    assistant_from(ctx).conversations.delete(conversation_id)
    click.echo(f"Removed conversation {conversation_id}.")
