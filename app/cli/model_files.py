"""What the model-writing commands share: a new model file that appears in the store only once
complete, a model named by store name or path, and a text file read as UTF-8."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from app.atomic import atomic_output_path
from app.cli.context import assistant_from
from app.gguf_file import inspect_gguf
from app.model_store import ModelStore, check_model_name, name_from_filename
from quantize.errors import ConversionError


def say(message: str) -> None:
    click.echo(message, err=True)


@contextlib.contextmanager
def new_model(store: ModelStore, out: Path | None, name: str | None, default_name: str, force: bool):
    """Yield (temp path to write, final name, final path); on success the file is in place and
    registered in the store, on any failure nothing is left behind."""
    if out is None:
        name = store.check_free(check_model_name(name or name_from_filename(Path(default_name))))
        with store.new_model_file(name) as tmp:
            yield tmp, name, store.home.models_dir / f"{name}.gguf"
        return
    out = Path(out).expanduser()
    if store.holds(out):
        raise ConversionError(
            f"{out} is inside Lantern's model store, whose files the registry owns; "
            "leave out -o to write a new model into the store"
        )
    if out.exists() and not force:
        raise ConversionError(f"{out} already exists; choose another path or pass --force to replace it")
    if not out.parent.is_dir():
        raise ConversionError(f"the folder {out.parent} does not exist")
    name = store.check_free(check_model_name(name or name_from_filename(out)))
    with atomic_output_path(out) as tmp:
        yield tmp, name, out
        inspect_gguf(tmp)
    store.link(out, name)


def model_path(ctx, text: str) -> tuple[str, Path]:
    path = Path(text).expanduser()
    if path.exists() or text.endswith(".gguf"):
        inspect_gguf(path)
        return path.name.removesuffix(".gguf"), path
    entry = assistant_from(ctx).models.get(text)
    return entry.name, entry.path


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConversionError(
            f"{path} is not UTF-8 text (byte {exc.start}); give a plain text file"
        ) from None
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc.strerror}") from None


def calibration_option(help_text: str):
    """`--calibrate NOTES`: the notes folder (or file) a command measures the model on."""
    return click.option(
        "--calibrate", "notes_path", required=True, type=click.Path(path_type=Path), help=help_text
    )
