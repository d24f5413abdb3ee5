"""`lantern init --encrypt` and `lantern passphrase change`: one key for the whole data home."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from app.cli.context import assistant_from
from app.errors import LanternError
from app.home_key import read_key_file
from app.sealing import change_passphrase, encrypt_home

KEY_FILE_HELP = "Use this file's bytes as the key instead of a passphrase (at least 16 random bytes)."


def _key_file_secret(path: Path) -> bytes:
    secret = read_key_file(path)
    if len(secret) < 16:
        raise LanternError(f"the key file {path} is too short; use at least 16 random bytes")
    return secret


def new_secret(key_file: Path | None, environment_variable: str, prompt: str) -> bytes:
    """A new passphrase: a key file, an environment variable, or typed twice in a terminal."""
    if key_file is not None:
        return _key_file_secret(key_file)
    if environment_variable in os.environ:
        return os.environ[environment_variable].encode("utf-8")
    if sys.stdin.isatty():
        return click.prompt(prompt, hide_input=True, confirmation_prompt=True, err=True).encode("utf-8")
    raise LanternError(f"no passphrase: set {environment_variable}, pass a key file, or run in a terminal")


@click.command("init")
@click.option(
    "--encrypt", is_flag=True, required=True, help="Seal the data home with a passphrase or key file."
)
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), help=KEY_FILE_HELP)
@click.pass_context
def init(ctx, encrypt, key_file):
    """Encrypt everything the notes touch: memory, conversations, input history and twins
    (AES-256-GCM and SQLCipher under one data key, scrypt from the passphrase)."""
    assistant = assistant_from(ctx)
    secret = new_secret(key_file, "LANTERN_PASSPHRASE", "New passphrase for the data home")
    report = encrypt_home(assistant, secret, say=lambda line: click.echo(f"  {line}"))
    if report.resumed:
        click.echo("An earlier 'lantern init --encrypt' was interrupted; it is finished now.")
    click.echo(
        f"The data home {assistant.home.root} is encrypted ({len(report.sealed)} parts sealed). "
        "Keep the passphrase safe: without it nothing in it can be read."
    )


@click.group()
def passphrase() -> None:
    """The data home's passphrase."""


@passphrase.command("change")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), help="The current key file.")
@click.option(
    "--new-key-file", type=click.Path(dir_okay=False, path_type=Path), help="A key file to use from now on."
)
@click.pass_context
def passphrase_change(ctx, key_file, new_key_file):
    """Re-wrap the data key under a new passphrase (or key file); nothing is re-encrypted.
    The current one comes from --key-file, LANTERN_KEY_FILE, LANTERN_PASSPHRASE or a prompt;
    the new one from --new-key-file, LANTERN_NEW_PASSPHRASE or a prompt (typed twice)."""
    assistant = assistant_from(ctx)
    if key_file is not None:
        old = _key_file_secret(key_file)
    else:
        old = assistant.key.secret()
    new = new_secret(new_key_file, "LANTERN_NEW_PASSPHRASE", "New passphrase")
    change_passphrase(assistant, old, new)
    click.echo("The passphrase is changed; the old one no longer opens this data home.")
