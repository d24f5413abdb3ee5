"""`lantern convert`, `lantern quantize` and `lantern eval`: the conversion pipeline's commands."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import click

from app.cli.context import assistant_from
from app.cli.model_files import model_path, new_model, read_text, say
from app.sizes import human_bytes
from quantize.errors import ConversionError


def _source(ctx, text: str):
    from quantize.sources import resolve_source

    return resolve_source(text, assistant_from(ctx).models)


@click.command()
@click.argument("src")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), help="GGUF file to write.")
@click.option("--type", "out_type", default="F16", show_default=True, help="F16, BF16 or F32.")
@click.option("--name", help="Name in the store (default: from the output or the source).")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--verify", is_flag=True, help="Check the torch model's logits against llama.cpp's.")
@click.pass_context
def convert(ctx, src, out, out_type, name, force, verify):
    """Write SRC (a store name, a GGUF file or a Hugging Face folder) as a float GGUF."""
    from quantize.gguf_export import export_gguf
    from quantize.quant_types import float_type
    from quantize.torch_bridge import load_torch_model, remember_tokenizer

    out_type = float_type(out_type)
    source = _source(ctx, src)
    store = assistant_from(ctx).models
    started = time.perf_counter()
    with new_model(store, out, name, f"{source.name}-{out_type.lower()}", force) as (tmp, final_name, path):
        say(f"Loading {source.path} into torch...")
        torch_model = load_torch_model(source)
        say(f"Writing {out_type} GGUF...")
        export_gguf(torch_model, tmp, out_type, name=final_name)
        if verify:
            _report_fidelity(torch_model, source.path if source.kind == "gguf" else None, tmp)
    if source.kind == "gguf":
        remember_tokenizer(torch_model.tokenizer, _source(ctx, str(path)))
    click.echo(
        f"Wrote {path} ({human_bytes(path.stat().st_size)}, {out_type}) in "
        f"{time.perf_counter() - started:.0f} s; in the store as {final_name}."
    )


def _report_fidelity(torch_model, source_gguf: Path | None, written: Path) -> None:
    from quantize.fidelity import compare_logits

    checks = [("the written file", written)]
    if source_gguf is not None:
        checks.insert(0, ("the source file", source_gguf))
    for label, path in checks:
        result = compare_logits(torch_model, path)
        say(
            f"torch vs llama.cpp on {label}: top-1 agreement {result.top1_agreement:.2%} over "
            f"{result.positions} positions, max |logit diff| {result.max_abs_diff:.3f} "
            f"(mean {result.mean_abs_diff:.4f})"
        )


@click.command()
@click.argument("src")
@click.option("--type", "qtype_name", required=True, help="Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, ...")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), help="GGUF file to write.")
@click.option("--name", help="Name in the store (default: from the output or the source).")
@click.option(
    "--imatrix-from",
    "imatrix_from",
    type=click.Path(path_type=Path),
    help="Notes folder or file: weigh the rounding by how your own notes use the model.",
)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.pass_context
def quantize(ctx, src, qtype_name, out, name, imatrix_from, force):
    """Quantize SRC with llama.cpp's quantizer; the new model is registered in the store."""
    from quantize.quant_types import FLOAT_TYPES, quant_type
    from quantize.quantizer import REQUANTIZE_NOTE, quantize_gguf

    qtype = quant_type(qtype_name)
    source = _source(ctx, src)
    store = assistant_from(ctx).models
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        gguf_path, is_float = source.path, False
        if source.kind == "gguf":
            is_float = source.summary.quantization.removeprefix("ALL_") in FLOAT_TYPES
        imatrix = None
        if imatrix_from is not None or source.kind == "hf":
            imatrix, gguf_path, is_float = _torch_side(source, imatrix_from, stack, gguf_path, is_float)
        if not is_float:
            say(f"Note: {REQUANTIZE_NOTE}.")
        target = new_model(store, out, name, f"{source.name}-{qtype.name.lower()}", force)
        tmp, final_name, path = stack.enter_context(target)
        say(f"Quantizing to {qtype.name} with llama.cpp...")
        quantize_gguf(gguf_path, is_float, tmp, qtype, imatrix)
    extra = f", importance matrix from {imatrix.tokens} tokens of notes" if imatrix else ""
    click.echo(
        f"Wrote {path} ({human_bytes(path.stat().st_size)}, {qtype.name}{extra}) in "
        f"{time.perf_counter() - started:.0f} s; in the store as {final_name}."
    )


def _torch_side(source, imatrix_from, stack, gguf_path, is_float):
    """Load SRC in torch when needed: a Hugging Face folder becomes a temporary F16 GGUF first,
    and an importance matrix is computed by running the notes."""
    from quantize.gguf_export import export_gguf
    from quantize.imatrix import compute_importance_matrix
    from quantize.notes_text import read_notes
    from quantize.torch_bridge import load_torch_model

    notes = read_notes(imatrix_from) if imatrix_from is not None else None
    say(f"Loading {source.path} into torch...")
    torch_model = load_torch_model(source)
    if source.kind == "hf":
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lantern-convert-")))
        gguf_path, is_float = scratch / "f16.gguf", True
        say("Writing a temporary F16 GGUF...")
        export_gguf(torch_model, gguf_path, "F16")
    imatrix = None
    if notes is not None:
        say(f"Running {len(notes.notes)} note file(s) for the importance matrix...")
        imatrix = compute_importance_matrix(torch_model, notes)
    return imatrix, gguf_path, is_float


@click.group("eval")
def eval_group():
    """Measure models: perplexity, how far one model strays from another, and whole answers."""


def _eval_options(command):
    command = click.option("--window", default=512, show_default=True, help="Tokens per window.")(command)
    command = click.option("--stride", default=256, show_default=True, help="Tokens between windows.")(
        command
    )
    command = click.option(
        "--max-tokens", default=8192, show_default=True, help="Score at most this many tokens of the text."
    )(command)
    command = click.option("--json", "as_json", is_flag=True)(command)
    return click.option("--text", "text_file", required=True, type=click.Path(path_type=Path))(command)


def _settings(window, stride, max_tokens):
    from quantize.evaluation import EvalSettings

    if not 0 < stride <= window:
        raise ConversionError("--stride must be between 1 and --window")
    return EvalSettings(window=window, stride=stride, max_tokens=max_tokens)


@eval_group.command("ppl")
@click.argument("model")
@_eval_options
@click.pass_context
def eval_ppl(ctx, model, text_file, as_json, max_tokens, stride, window):
    """Perplexity of MODEL over a text (sliding window, through llama.cpp)."""
    from quantize.evaluation import measure_perplexity

    name, path = model_path(ctx, model)
    result = measure_perplexity(path, name, read_text(text_file), _settings(window, stride, max_tokens))
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result)))
        return
    click.echo(
        f"{name}: perplexity {result.perplexity:.3f} over {result.tokens_scored} tokens of {text_file.name} "
        f"(window {window}, stride {stride}); decode {result.decode_tokens_per_second:.1f} tokens/s"
    )


@eval_group.command("compare")
@click.argument("model_a")
@click.argument("model_b")
@_eval_options
@click.pass_context
def eval_compare(ctx, model_a, model_b, text_file, as_json, max_tokens, stride, window):
    """Perplexity of A and B, KL divergence of B from A, top-1 agreement, size and speed."""
    from quantize.evaluation import compare_models

    a_name, a_path = model_path(ctx, model_a)
    b_name, b_path = model_path(ctx, model_b)
    settings = _settings(window, stride, max_tokens)
    result = compare_models(a_path, a_name, b_path, b_name, read_text(text_file), settings)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result)))
        return
    rows = [("", a_name, b_name)]
    rows.append(("file size", human_bytes(result.a.file_size), human_bytes(result.b.file_size)))
    rows.append(("perplexity", f"{result.a.perplexity:.3f}", f"{result.b.perplexity:.3f}"))
    rows.append(
        (
            "decode tokens/s",
            f"{result.a.decode_tokens_per_second:.1f}",
            f"{result.b.decode_tokens_per_second:.1f}",
        )
    )
    width = max(len(value) for row in rows for value in row[1:]) + 2
    for label, a_value, b_value in rows:
        click.echo(f"{label:<18}{a_value:>{width}}{b_value:>{width}}")
    click.echo(
        f"KL({a_name} || {b_name}): mean {result.kl_divergence:.5f}, "
        f"p99 {result.kl_divergence_p99:.5f} nats; "
        f"top-1 agreement {result.top1_agreement:.2%} over {result.positions} positions of {text_file.name}"
    )
