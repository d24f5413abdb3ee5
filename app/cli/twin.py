"""`lantern twin ...`: build a personal twin from notes, measure it, chat with it (`ask --twin`)."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import click

from app.cli.context import assistant_from
from app.cli.model_files import say
from app.errors import LanternError
from app.model_store import check_model_name
from app.sizes import human_bytes
from app.twins import TwinRecord
from quantize.twin.compile_choice import CHOICES as COMPILE_CHOICES
from quantize.twin.training_config import DEFAULT_EPOCHS, MOE_EXPERT_CHOICES, TrainingConfig


@click.group()
def twin():
    """Your twin: a LoRA adapter trained on your notes, run on top of a base model."""


@twin.command("dataset")
@click.argument("notes", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the dataset.")
@click.option("--base", help="Model whose tokenizer counts the tokens (default: the default model).")
@click.option("--seq-len", default=TrainingConfig.sequence_length, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def twin_dataset(ctx, notes, out, base, seq_len, seed, as_json):
    """Build the training and held-out samples from NOTES and show their counts and tokens."""
    from quantize.twin.dataset import build_dataset, save_dataset

    dataset = build_dataset(notes, seed=seed)
    tokenizer = _tokenizer(ctx, base)
    cipher = assistant_from(ctx).key.cipher()
    summary = save_dataset(dataset, out, tokenizer, seq_len, cipher)
    if as_json:
        click.echo(json.dumps(summary))
        return
    for split in ("train", "heldout"):
        c = summary["counts"][split]
        click.echo(
            f"{split:<8} {c['files']:>4} files  {c['text']:>5} passages  {c['chat']:>5} chat samples  "
            f"{c['tokens']:>9,} tokens  {c['sequences']:>6} sequences of {seq_len}"
        )
    click.echo(
        f"dropped {summary['counts']['duplicates_dropped']} duplicate passages and "
        f"{summary['counts']['heldout_paragraphs_dropped']} held-out paragraphs that training notes "
        f"also hold; skipped {summary['counts']['skipped_files']} files; written to {out}"
        + (" (sealed: the data home is encrypted)" if cipher is not None else "")
    )


def _tokenizer(ctx, base: str | None):
    from quantize.sources import resolve_source
    from quantize.torch_bridge import load_tokenizer

    assistant = assistant_from(ctx)
    return load_tokenizer(resolve_source(base or assistant.config.default_model, assistant.models))


def _base_and_shape_options(command):
    """The options that decide what a build compiles: `build` and `warm-up` share them."""
    for option in reversed(
        (
            click.option("--base", help="Base model in the store (default: the default model)."),
            click.option("--rank", default=TrainingConfig.rank, show_default=True),
            click.option("--alpha", default=TrainingConfig.alpha, show_default=True),
            click.option(
                "--train-layers",
                type=int,
                default=None,
                help="LoRA on the top N layers (0: all; default: all but the lowest sixth, 25 of 30).",
            ),
            click.option("--seq-len", default=TrainingConfig.sequence_length, show_default=True),
            click.option("--batch-size", default=TrainingConfig.batch_size, show_default=True),
        )
    ):
        command = option(command)
    return command


@twin.command("build")
@click.argument("notes", type=click.Path(path_type=Path))
@click.option("--name", default="twin", show_default=True, help="The twin's name.")
@_base_and_shape_options
@click.option("--steps", type=int, help="Optimizer steps.")
@click.option("--minutes", type=float, help="Train for at most this long.")
@click.option(
    "--epochs",
    type=float,
    help=f"Stop after this many passes over the notes (default {DEFAULT_EPOCHS:g} unless --steps is given).",
)
@click.option("--grad-accum", default=TrainingConfig.grad_accum, show_default=True)
@click.option("--lr", default=TrainingConfig.learning_rate, show_default=True)
@click.option("--seed", default=TrainingConfig.seed, show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["auto", "bf16", "fp32"]),
    default=TrainingConfig.precision,
    show_default=True,
)
@click.option(
    "--compile",
    "compile_layers",
    type=click.Choice(COMPILE_CHOICES),
    default=TrainingConfig.compile,
    show_default=True,
    help="Compile the trained layers with torch's inductor (auto: for runs long enough to repay it).",
)
@click.option(
    "--moe-experts",
    type=click.Choice(MOE_EXPERT_CHOICES),
    default=TrainingConfig.moe_experts,
    show_default=True,
    help="Mixture-of-Experts bases: LoRA on no expert, the shared expert, or every expert too.",
)
@click.option("--resume", is_flag=True, help="Continue from the twin's last checkpoint.")
@click.option("--merge", is_flag=True, help="Also write a merged model, re-quantized to the base's type.")
@click.pass_context
def twin_build(ctx, notes, name, base, resume, merge, **options):
    """Fine-tune a twin on NOTES (LoRA); Ctrl+C saves a checkpoint, --resume continues it."""
    from quantize.sources import resolve_source
    from quantize.twin import distributed
    from quantize.twin.builder import build_twin

    assistant = assistant_from(ctx)
    check_model_name(name)
    cipher = assistant.key.cipher()
    if merge and cipher is not None:
        raise LanternError(
            "--merge is refused in an encrypted data home: a merged twin is a whole model that has "
            "learned the notes, and model files stay unsealed for llama.cpp; build without --merge "
            f"and use the sealed adapter ('lantern ask --twin {name}')"
        )
    # Under torchrun every process runs this command; the first one owns the twin's record (the
    # others would otherwise find the record it has just written and refuse).
    owner = distributed.from_environment().is_main
    if owner and not resume and assistant.twins.exists(name):
        raise LanternError(f"a twin named {name!r} exists; continue it with --resume or remove it first")
    if any(e.name == name for e in assistant.models.list()):
        raise LanternError(f"{name!r} is a model's name in the store; choose another twin name")
    base = base or (assistant.twins.get(name).base_model if resume else assistant.config.default_model)
    source = resolve_source(base, assistant.models)
    _keep_compiled_layers(assistant)
    config = TrainingConfig(
        rank=options["rank"],
        alpha=options["alpha"],
        train_layers=options["train_layers"],
        sequence_length=options["seq_len"],
        batch_size=options["batch_size"],
        grad_accum=options["grad_accum"],
        learning_rate=options["lr"],
        max_steps=options["steps"],
        max_minutes=options["minutes"],
        max_epochs=_epochs(options["epochs"], options["steps"]),
        seed=options["seed"],
        precision=options["precision"],
        compile=options["compile_layers"],
        moe_experts=options["moe_experts"],
    )
    record = assistant.twins.get(name) if resume else TwinRecord(name, base, str(Path(notes).resolve()))
    if owner:
        assistant.twins.save(record)
    bar = _ProgressBar(config)
    try:
        build = build_twin(
            Path(notes),
            source,
            assistant.twins.folder(name),
            name,
            config,
            resume,
            say,
            bar.update,
            cipher=cipher,
        )
    except LanternError:
        bar.close()
        if owner and not resume:
            assistant.twins.remove(name)  # nothing was trained: leave no half-made twin behind
        raise
    except KeyboardInterrupt:
        bar.close()
        say(
            "Stopped; the checkpoint is saved. Continue with: "
            f"lantern twin build {notes} --name {name} --resume"
        )
        raise SystemExit(130) from None
    bar.close()
    result = build.result
    if result.adapted_matrices == 0:
        return  # a helper process under torchrun: the first process writes the adapter and the record
    record.trained = True
    record.training = {
        "steps": result.state.step,
        "tokens": result.state.tokens_seen,
        "train_seconds": round(result.state.elapsed_seconds, 1),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "final_loss": round(result.state.losses[-1], 4) if result.state.losses else None,
        "bf16": result.bf16,
        "rank": config.rank,
        "alpha": config.alpha,
        "train_layers": config.train_layers,
        "moe_experts": config.moe_experts,
        "seq_len": config.sequence_length,
        "seed": config.seed,
        "processes": result.processes,
    }
    if merge:
        record.merged_model = _merge(assistant, build, source, name)
    assistant.twins.save(record)
    click.echo(
        f"Twin {name}: {result.state.step} steps, {result.state.tokens_seen:,} tokens at "
        f"{result.tokens_per_second:.0f} tokens/s, adapter for {result.adapted_matrices} matrices. "
        f'Chat with it: lantern ask --twin {name} "..."'
    )


def _keep_compiled_layers(assistant) -> None:
    """Compiled layers are kept in the data home, so only a machine's first twin of a shape waits
    for the compiler (torch's default is a temporary folder, emptied at reboot)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(assistant.home.root / "compiled"))


@twin.command("warm-up")
@_base_and_shape_options
@click.pass_context
def twin_warm_up(ctx, base, rank, alpha, train_layers, seq_len, batch_size):
    """Compile a twin's layers now, so the first `twin build` of these settings starts at full speed."""
    from quantize.sources import resolve_source
    from quantize.twin.compile_choice import cxx_compiler
    from quantize.twin.compile_warmup import warm_up_compiled_layers

    assistant = assistant_from(ctx)
    source = resolve_source(base or assistant.config.default_model, assistant.models)
    if cxx_compiler() is None:
        raise LanternError(
            "no C++ compiler (g++ or clang++, or one named by $CXX): twins train uncompiled and "
            "there is nothing to warm up; install one for faster twin builds"
        )
    _keep_compiled_layers(assistant)
    config = TrainingConfig(
        rank=rank,
        alpha=alpha,
        train_layers=train_layers,
        sequence_length=seq_len,
        batch_size=batch_size,
        max_steps=1,
    )
    say(f"Compiling a twin's trained layers for {source.name} (about half a minute on 2 cores)...")
    seconds = warm_up_compiled_layers(source, config)
    click.echo(
        f"Done in {seconds:.0f} s; the compiled layers are kept in {os.environ['TORCHINDUCTOR_CACHE_DIR']}: "
        f"twin builds of {source.name} with these settings start at full speed."
    )


def _merge(assistant, build, source, name: str) -> str:
    from quantize.gguf_export import write_gguf
    from quantize.quant_types import FLOAT_TYPES, QUANT_TYPES
    from quantize.quantizer import quantize_gguf

    base_type = source.summary.quantization if source.summary else "F16"
    merged_name = f"{name}-merged"
    say(f"Merging the adapter into {source.name} and writing {base_type}...")
    merged = build.peft_model.merge_and_unload()
    with assistant.models.new_model_file(merged_name) as out:
        if base_type in FLOAT_TYPES:
            write_gguf(merged, out, base_type, carried=build.torch_model.carried_metadata, name=merged_name)
        else:
            with tempfile.TemporaryDirectory(prefix="lantern-merge-") as scratch:
                f16 = Path(scratch) / "merged-f16.gguf"
                write_gguf(merged, f16, "F16", carried=build.torch_model.carried_metadata, name=merged_name)
                quant = QUANT_TYPES.get(base_type, QUANT_TYPES["Q8_0"])
                quantize_gguf(f16, True, out, quant)
    say(f"Merged model in the store as {merged_name}.")
    return merged_name


def _epochs(asked: float | None, steps: int | None) -> float | None:
    """--epochs as given; otherwise the default cap, unless an exact --steps count was asked for."""
    if asked is not None:
        return asked
    return None if steps is not None else DEFAULT_EPOCHS


class _ProgressBar:
    """tqdm's bar with loss and tokens/s, opened at the first step (after the loading messages)."""

    def __init__(self, config):
        self._config = config
        self._bar = None
        self._by_steps = config.max_minutes is None

    def update(self, progress) -> None:
        from tqdm import tqdm

        if self._bar is None:
            total = progress.total_steps if self._by_steps else int(self._config.max_minutes * 60)
            self._bar = tqdm(total=total, unit="step" if self._by_steps else "s", desc="training")
        done = progress.step if self._by_steps else int(progress.elapsed_seconds)
        self._bar.update(max(0, min(done, self._bar.total) - self._bar.n))
        self._bar.set_postfix(loss=f"{progress.loss:.3f}", tok_s=f"{progress.tokens_per_second:.0f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@twin.command("eval")
@click.argument("name")
@click.option(
    "--text", "text_file", type=click.Path(path_type=Path), help="Text to score (default: held-out notes)."
)
@click.option("--max-tokens", default=8192, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def twin_eval(ctx, name, text_file, max_tokens, as_json):
    """Perplexity of the base and of the twin (adapter applied in llama.cpp) on held-out notes."""
    from quantize.evaluation import EvalSettings, measure_perplexity

    assistant = assistant_from(ctx)
    record = assistant.twins.get(name)
    if not record.trained:
        raise LanternError(f"twin {name!r} has no adapter yet; finish it with 'lantern twin build --resume'")
    base = assistant.models.resolve(record.base_model)
    cipher = assistant.key.cipher()
    text = _eval_text(assistant.twins.folder(name), text_file, cipher)
    settings = EvalSettings(window=512, stride=256, max_tokens=max_tokens, shrink_for_short_text=True)
    adapter = assistant.twins.adapter_path(name)
    base_result = measure_perplexity(base.path, record.base_model, text, settings, speed=False)
    with assistant.twins.adapter_file(name, cipher) as loadable:
        twin_settings = dataclasses.replace(settings, lora_path=str(loadable), lora_scale=record.scale)
        twin_result = measure_perplexity(base.path, name, text, twin_settings, speed=False)
    report = {
        "base_ppl": base_result.perplexity,
        "twin_ppl": twin_result.perplexity,
        "reduction": 1 - twin_result.perplexity / base_result.perplexity,
        "tokens_scored": twin_result.tokens_scored,
        "text": str(text_file) if text_file else "held-out notes",
        "adapter_size": adapter.stat().st_size,
    }
    record.results = report
    assistant.twins.save(record)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(
        f"{report['text']}: perplexity {report['base_ppl']:.3f} (base {record.base_model}) -> "
        f"{report['twin_ppl']:.3f} (twin {name}), {report['reduction']:.1%} lower, over "
        f"{report['tokens_scored']} tokens; adapter {human_bytes(report['adapter_size'])}"
    )
    _samples_side_by_side(assistant, record, name, cipher)


def _eval_text(twin_dir: Path, text_file: Path | None, cipher) -> str:
    if text_file is not None:
        try:
            return text_file.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise LanternError(f"{text_file} is not UTF-8 text") from None
    from quantize.twin.dataset import load_samples

    samples = load_samples(twin_dir / "dataset" / "heldout.jsonl", cipher)
    text = "\n\n".join(s["text"] for s in samples if s["kind"] == "text")
    if not text:
        raise LanternError("this twin has no held-out notes (too few files); pass --text FILE")
    return text


def _samples_side_by_side(assistant, record: TwinRecord, name: str, cipher) -> None:
    from quantize.twin.dataset import load_samples

    samples = load_samples(assistant.twins.folder(name) / "dataset" / "heldout.jsonl", cipher)
    prompts = [s["prompt"] for s in samples if s["kind"] == "chat"][:2]
    settings = assistant.settings(max_tokens=60, temperature=0)
    for prompt in prompts:
        click.echo(f"\n> {prompt}")
        for label, model in (("base", record.base_model), ("twin", name)):
            turn = assistant.ask(prompt, model=model, settings=settings, use_memory=False)
            text = "".join(turn).strip().replace("\n", " ")
            click.echo(f"  [{label}] {text}")


@twin.command("list")
@click.pass_context
def twin_list(ctx):
    """The twins, their base model and last measured perplexities."""
    records = assistant_from(ctx).twins.list()
    if not records:
        click.echo("No twins yet. Build one with 'lantern twin build NOTES'.")
    for r in records:
        measured = ""
        if r.results:
            measured = f"  ppl {r.results['base_ppl']:.2f} -> {r.results['twin_ppl']:.2f}"
        state = "trained" if r.trained else "unfinished"
        click.echo(f"{r.name:<20} base {r.base_model:<28} {state}{measured}")


@twin.command("rm")
@click.argument("name")
@click.pass_context
def twin_rm(ctx, name):
    """Remove a twin (its adapter, dataset and checkpoint); a merged model stays in the store."""
    assistant_from(ctx).twins.remove(name)
    click.echo(f"Removed twin {name}.")


@twin.command("tune-prefs")
@click.argument("name")
@click.option("--steps", default=20, show_default=True)
@click.option("--beta", default=0.1, show_default=True, help="How close to stay to the twin as built.")
@click.option("--lr", default=5e-5, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.pass_context
def twin_tune_prefs(ctx, name, steps, beta, lr, seed):
    """DPO on your ratings (TUI F6/F7/F9, POST /v1/lantern/feedback), on top of the twin's adapter."""
    import contextlib

    from peft import set_peft_model_state_dict

    from app.private_files import read_private, write_private
    from app.private_temp import private_temp_folder
    from quantize.sources import resolve_source
    from quantize.torch_bridge import load_torch_model
    from quantize.twin.adapter_export import save_adapter
    from quantize.twin.dpo import DpoSettings, no_pairs_error, tune_preferences
    from quantize.twin.preferences import dpo_pairs
    from quantize.twin.trainer import CHECKPOINT, add_lora, read_checkpoint

    assistant = assistant_from(ctx)
    cipher = assistant.key.cipher()
    record = assistant.twins.get(name)
    folder = assistant.twins.folder(name)
    if not record.trained or not (folder / CHECKPOINT).is_file():
        raise LanternError(f"twin {name!r} has no trained adapter yet; build it first")
    found = dpo_pairs(assistant.conversations.preference_pairs())
    say(
        f"{len(found.pairs)} preference pairs "
        f"({found.unpaired} ratings without a partner answer are not used)"
    )
    if not found.pairs:
        raise no_pairs_error()
    trained = record.training
    config = TrainingConfig(
        rank=trained["rank"],
        alpha=trained["alpha"],
        train_layers=trained["train_layers"],
        moe_experts=trained.get("moe_experts", TrainingConfig.moe_experts),
        max_steps=1,
        seed=seed,
    )
    torch_model = load_torch_model(resolve_source(record.base_model, assistant.models))
    peft_model, _ = add_lora(torch_model.model, config)
    set_peft_model_state_dict(peft_model, read_checkpoint(folder / CHECKPOINT, cipher)["lora"])
    say(f"Running DPO for {steps} steps (beta {beta})...")
    scratch = private_temp_folder("dpo") if cipher is not None else contextlib.nullcontext(None)
    with scratch as scratch_folder:
        report = tune_preferences(
            peft_model,
            torch_model.tokenizer,
            found.pairs,
            DpoSettings(steps=steps, learning_rate=lr, beta=beta, seed=seed),
            scratch_folder,
        )
    adapter = assistant.twins.adapter_path(name)
    before = folder / "adapter-before-prefs.gguf"
    if not before.exists():  # sealed again under its own name (a sealed file's name is part of it)
        write_private(before, read_private(adapter, cipher), cipher)
    save_adapter(peft_model, adapter, name, cipher)
    record.training["preference_tuning"] = dataclasses.asdict(report)
    assistant.twins.save(record)
    click.echo(
        f"Twin {name} tuned on {report.pairs} pairs in {report.steps} DPO steps "
        f"(loss {report.first_loss:.4f} -> {report.last_loss:.4f}); the adapter before tuning is kept as "
        f"{before.name}."
    )
