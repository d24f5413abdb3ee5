"""The twin, as its owner builds it: notes in, a dataset split by file, LoRA training that lowers
the loss, an adapter llama.cpp applies at the scale asked, Ctrl+C and --resume, clear refusals.
Small step counts on the real SmolLM2; the full-length build is measured in bench/bench_twin.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from pydoc_data.topics import topics

import gguf
import numpy as np
import pytest

from tests.conftest import LANTERN
from tests.conftest import lantern_at as lantern
from tests.gguf_fixtures import llama_cpp_logits, write_one_tensor_gguf

TOPICS = [
    "assert",
    "class",
    "for",
    "while",
    "with",
    "try",
    "if",
    "import",
    "lambda",
    "return",
    "yield",
    "del",
]


@pytest.fixture(scope="module")
def notes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("notes")
    for topic in TOPICS:
        (folder / f"{topic}.md").write_text(f"# {topic}\n\n{topics[topic]}", encoding="utf-8")
    (folder / "copy-of-class.md").write_text(f"# class\n\n{topics['class']}", encoding="utf-8")  # a duplicate
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    (folder / ".obsidian").mkdir()
    (folder / ".obsidian" / "workspace.md").write_text("# hidden\n\napp settings, not a note " * 5)
    return folder


@pytest.fixture(scope="module")
def twin_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("twin-home")


def test_dataset_is_split_by_file_and_deduplicated(notes):
    from quantize.twin.dataset import build_dataset

    dataset = build_dataset(notes, seed=0)
    train, heldout = set(dataset.train.files), set(dataset.heldout.files)
    assert train and heldout and not train & heldout
    assert {s.source for s in dataset.train.samples} <= train
    assert {s.source for s in dataset.heldout.samples} <= heldout
    assert dataset.duplicates_dropped >= 1  # the copied note
    assert any("scan.pdf" in path for path, _ in dataset.skipped)
    assert not any(".obsidian" in f for f in train | heldout)
    chat = [s for s in dataset.train.samples if s.kind == "chat"]
    assert chat and all(s.prompt and s.text for s in chat)
    assert build_dataset(notes, seed=0) == dataset  # the same notes and seed give the same split


def test_heldout_split_takes_about_the_asked_share_of_words_even_with_one_long_note(tmp_path):
    from quantize.twin.dataset import build_dataset, choose_heldout

    # Pydoc's topics as notes: a few long ones (specialnames, compound) and many short ones.
    for name, text in topics.items():
        (tmp_path / f"{name}.md").write_text(f"# {name}\n\n{text}", encoding="utf-8")
    dataset = build_dataset(tmp_path, seed=0, heldout_fraction=0.1)

    def words(split) -> int:
        return sum(len(s.text.split()) for s in split.samples if s.kind == "text")

    share = words(dataset.heldout) / (words(dataset.heldout) + words(dataset.train))
    assert 0.05 < share <= 0.11, share
    assert not set(dataset.train.files) & set(dataset.heldout.files)
    # Topics quote each other ("comparisons" repeats paragraphs of other topics): a held-out note
    # keeps none of the paragraphs the twin trains on, so eval scores only unseen text.
    trained = {p.strip() for s in dataset.train.samples for p in s.text.split("\n\n")}
    heldout = [p.strip() for s in dataset.heldout.samples for p in s.text.split("\n\n")]
    assert dataset.heldout_paragraphs_dropped >= 1
    assert not [p for p in heldout if len(p.split()) >= 8 and p in trained]

    # Adding a note moves at most the files at the target's edge; the rest keep their side.
    sizes = {f"note-{i}.md": 100 + 37 * i for i in range(60)}
    before = choose_heldout(sizes, seed=3, fraction=0.1)
    after = choose_heldout({**sizes, "new.md": 120}, seed=3, fraction=0.1)
    assert before and len(before - after) <= 1
    # Notes all longer than the share asked: the smallest is held out, so eval still has unseen text.
    assert choose_heldout({"a.md": 500, "b.md": 400}, seed=0, fraction=0.1) == {"b.md"}


def test_twin_dataset_command_shows_counts_and_tokens(notes, twin_home, tmp_path):
    result = lantern(twin_home, "twin", "dataset", str(notes), "--out", str(tmp_path / "ds"), "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)["counts"]
    assert counts["train"]["tokens"] > 5000 and counts["heldout"]["tokens"] > 0
    assert (tmp_path / "ds" / "train.jsonl").is_file() and (tmp_path / "ds" / "heldout.jsonl").is_file()


@pytest.fixture(scope="module")
def trained(notes, bundled_model, tmp_path_factory):
    """A few real training steps on the notes, in process, with everything a test needs after."""
    import torch

    from quantize.sources import gguf_source
    from quantize.torch_bridge import load_torch_model
    from quantize.twin.adapter_export import export_lora_gguf
    from quantize.twin.dataset import build_dataset, pack
    from quantize.twin.split_model import SplitModel
    from quantize.twin.trainer import TwinTrainer, add_lora
    from quantize.twin.training_config import TrainingConfig

    torch_model = load_torch_model(gguf_source(bundled_model, "smollm2"))
    ids = torch.tensor([torch_model.tokenizer.encode(topics["class"], add_special_tokens=False)[:64]])
    with torch.no_grad():
        full_logits = torch_model.model(input_ids=ids).logits
        split = SplitModel(torch_model.model, cut=20)
        split_logits = split.upper_logits(split.lower(ids))
    # 16 sequences in batches of 4: an epoch is 4 steps, so 2.5 epochs end after 10.
    config = TrainingConfig(
        rank=8, alpha=16, train_layers=4, batch_size=4, max_epochs=2.5, learning_rate=3e-3, seed=0
    )
    train_samples = build_dataset(notes).train.samples
    sequences = pack(train_samples, torch_model.tokenizer, config.sequence_length)
    peft_model, cut = add_lora(torch_model.model, config)
    folder = tmp_path_factory.mktemp("trained")
    with torch.no_grad():
        fp32_trainer = TwinTrainer(peft_model, cut, sequences[:4], replace(config, precision="fp32"), folder)
        first_batch = fp32_trainer.input_ids
        plain_loss = peft_model(input_ids=first_batch, labels=first_batch).loss.item()
        trainer_loss = fp32_trainer.loss_for(torch.arange(4)).item()
    trainer = TwinTrainer(peft_model, cut, sequences[:16], config, folder)
    state = trainer.run()
    adapter = folder / "adapter.gguf"
    adapted = export_lora_gguf(peft_model, adapter, "test-twin")
    twin_logits = {}
    with torch.no_grad():
        for scale in (1.0, 0.5):
            lora_layers = [m for m in peft_model.modules() if isinstance(getattr(m, "scaling", None), dict)]
            for layer in lora_layers:
                layer.scaling["default"] = scale * config.alpha / config.rank
            twin_logits[scale] = peft_model(input_ids=ids).logits[0].float().numpy()
    return {
        "full": full_logits,
        "split": split_logits,
        "plain_loss": plain_loss,
        "trainer_loss": trainer_loss,
        "state": state,
        "adapter": adapter,
        "adapted": adapted,
        "ids": ids[0].tolist(),
        "base_logits": full_logits[0].float().numpy(),
        "twin_logits": twin_logits,
        "packed": [torch_model.tokenizer.decode(sequence) for sequence in sequences],
        "chat_answers": [sample.text for sample in train_samples if sample.kind == "chat"],
    }


def test_no_training_sequence_holds_a_chat_answer_next_to_the_passage_it_repeats(trained):
    # A chat answer is the opening of a passage; in one sequence with it, the model would learn to
    # copy the answer from its context instead of learning to write it.
    openings = [answer[:60] for answer in trained["chat_answers"] if len(answer) >= 60]
    assert len(openings) > 10
    for sequence in trained["packed"]:
        assert all(sequence.count(opening) <= 1 for opening in openings)


def test_the_cached_lower_layers_compute_the_same_logits_and_loss(trained):
    assert np.allclose(trained["full"].numpy(), trained["split"].numpy(), atol=1e-3)
    # The trainer's loss (cached lower layers, then the sliced loss) is the one transformers
    # computes from ``labels=``.
    assert trained["trainer_loss"] == pytest.approx(trained["plain_loss"], rel=1e-5)


def test_the_sliced_loss_is_plain_cross_entropy_with_its_gradient():
    import torch

    from quantize.twin.sliced_loss import sliced_next_token_loss

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 100, 64, generator=generator, requires_grad=True)  # 2 whole slices and a part
    weight = torch.randn(1000, 64, generator=generator)
    targets = torch.randint(0, 1000, (3, 100), generator=generator)
    plain = torch.nn.functional.cross_entropy((hidden @ weight.T).reshape(-1, 1000), targets.reshape(-1))
    (plain_grad,) = torch.autograd.grad(plain, hidden)
    # Eagerly, and compiled by inductor (where the last slice reaches back over counted rows).
    for compiled in (False, True):
        sliced = sliced_next_token_loss(hidden, weight, targets, torch.float32, compiled=compiled)
        (sliced_grad,) = torch.autograd.grad(3 * sliced, hidden)  # a scale from above is carried through
        assert sliced.item() == pytest.approx(plain.item(), rel=1e-6)
        assert torch.allclose(sliced_grad, 3 * plain_grad, atol=1e-7)

    # bf16 products round like autocast's lm_head does.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_logits = torch.nn.functional.linear(hidden, weight).float()
    autocast = torch.nn.functional.cross_entropy(autocast_logits.reshape(-1, 1000), targets.reshape(-1))
    (autocast_grad,) = torch.autograd.grad(autocast, hidden)
    sliced = sliced_next_token_loss(hidden, weight, targets, torch.bfloat16)
    (sliced_grad,) = torch.autograd.grad(sliced, hidden)
    assert sliced.item() == pytest.approx(autocast.item(), rel=1e-3)
    assert (sliced_grad - autocast_grad).norm() < 0.01 * autocast_grad.norm()

    with pytest.raises(ValueError, match="one target per position"):
        sliced_next_token_loss(hidden, weight, targets[:, 1:], torch.float32)
    with pytest.raises(ValueError, match="freeze"):
        sliced_next_token_loss(hidden, weight.requires_grad_(), targets, torch.float32)


def test_the_causal_attention_is_sdpa_with_its_gradient():
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv

    from quantize.twin.causal_attention import causal_attention

    generator = torch.Generator().manual_seed(0)
    # SmolLM2's shape: 9 query heads sharing 3 key-value heads, 64 dimensions each.
    query, key, value = (
        torch.randn(2, heads, 40, 64, generator=generator, requires_grad=True) for heads in (9, 3, 3)
    )
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, repeat_kv(key, 3), repeat_kv(value, 3), is_causal=True, scale=0.125
    ).transpose(1, 2)
    output, _ = causal_attention(None, query, key, value, None, scaling=0.125)
    assert output.shape == (2, 40, 9, 64)
    assert torch.allclose(output, expected, atol=1e-5)
    upstream = torch.randn(output.shape, generator=generator)
    assert all(
        torch.allclose(a, b, atol=1e-5)
        for a, b in zip(
            torch.autograd.grad(output, (query, key, value), upstream),
            torch.autograd.grad(expected, (query, key, value), upstream),
            strict=True,
        )
    )


WARM_UP_SHAPE = {"rank": 4, "alpha": 8, "train_layers": 3, "sequence_length": 64, "batch_size": 2}
WARM_UP_OPTIONS = "--rank 4 --alpha 8 --train-layers 3 --seq-len 64 --batch-size 2".split()


def _training(bundled_model, notes, config, folder: Path):
    from quantize.sources import gguf_source
    from quantize.torch_bridge import load_torch_model
    from quantize.twin.dataset import build_dataset, pack
    from quantize.twin.trainer import TwinTrainer, add_lora

    torch_model = load_torch_model(gguf_source(bundled_model, "smollm2"))
    sequences = pack(build_dataset(notes).train.samples, torch_model.tokenizer, config.sequence_length)[:8]
    peft_model, cut = add_lora(torch_model.model, config)
    return TwinTrainer(peft_model, cut, sequences, config, folder)


@pytest.fixture(scope="module")
def first_compiled_build(notes, bundled_model, tmp_path_factory):
    """`lantern twin warm-up` in a fresh data home, then a user's first compiled build of the same
    shapes in this process, with this process's own compiled code dropped. The compile tests below
    share it: inductor compiles these layers once, in the warm-up."""
    import torch
    from torch._dynamo.utils import counters

    from quantize.twin.training_config import TrainingConfig

    home = tmp_path_factory.mktemp("warm-up") / "home"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # torch sets it once it compiles
        warm_up = lantern(home, "twin", "warm-up", "--base", str(bundled_model), *WARM_UP_OPTIONS)
        assert warm_up.returncode == 0, warm_up.stderr
        env.setenv("TORCHINDUCTOR_CACHE_DIR", str(home / "compiled"))
        torch._dynamo.reset()
        counters.clear()
        config = TrainingConfig(**WARM_UP_SHAPE, max_steps=4, compile="on")
        trainer = _training(bundled_model, notes, config, tmp_path_factory.mktemp("first-build"))
        losses = trainer.run().losses
        cache = counters["inductor"].copy()
    return {"home": home, "warm_up": warm_up, "trainer": trainer, "losses": losses, "cache": cache}


def test_compiled_layers_train_as_the_uncompiled_ones(first_compiled_build, notes, bundled_model, tmp_path):
    """The layers compiled by inductor, with the causal attention, give the same training: the
    same losses step by step, to bf16 rounding."""
    from quantize.twin.training_config import TrainingConfig

    compiled = first_compiled_build["trainer"]
    precision = "bf16" if compiled.bf16 else "fp32"  # as "auto" chose for the compiled build
    config = TrainingConfig(**WARM_UP_SHAPE, max_steps=4, precision=precision, compile="off")
    uncompiled = _training(bundled_model, notes, config, tmp_path)
    assert compiled.split.compiled and not uncompiled.split.compiled
    losses = uncompiled.run().losses
    assert first_compiled_build["losses"] == pytest.approx(losses, rel=0.01)
    assert first_compiled_build["losses"] != losses  # a different code path did run


def test_compiling_is_chosen_for_long_runs_and_refused_without_a_compiler(monkeypatch, tmp_path):
    from quantize.errors import ConversionError
    from quantize.twin.compile_choice import should_compile

    assert should_compile("auto", planned_steps=213, max_minutes=10)  # the default pydoc build
    assert not should_compile("auto", planned_steps=6, max_minutes=None)  # a quick try
    assert not should_compile("off", planned_steps=213, max_minutes=10)
    # A machine without a C++ compiler: nothing on PATH, no $CXX.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    assert not should_compile("auto", planned_steps=213, max_minutes=10)
    with pytest.raises(ConversionError, match="needs a C\\+\\+ compiler"):
        should_compile("on", planned_steps=6, max_minutes=None)
    with pytest.raises(ConversionError, match="must be one of"):
        should_compile("sometimes", planned_steps=6, max_minutes=None)
    warm_up = lantern(tmp_path / "home", "twin", "warm-up")
    assert warm_up.returncode != 0
    assert "no C++ compiler" in warm_up.stderr


def test_warm_up_compiles_the_layers_a_first_build_then_finds(first_compiled_build):
    """`make` runs `lantern twin warm-up` at install, so that a user's first twin build does not
    wait for the compiler: the build's compiled layers all come from the on-disk cache."""
    warm_up, home = first_compiled_build["warm_up"], first_compiled_build["home"]
    assert "twin builds of" in warm_up.stdout
    assert any((home / "compiled").rglob("*.so"))  # the compiled kernels, kept in the data home
    assert first_compiled_build["cache"]["fxgraph_cache_hit"] > 0
    assert first_compiled_build["cache"]["fxgraph_cache_miss"] == 0


def test_a_few_training_steps_lower_the_loss(trained):
    losses = trained["state"].losses
    assert len(losses) == 10  # stopped by the epoch cap
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05


def test_the_adapter_loads_in_llama_cpp_and_scales(trained, bundled_model):
    reader = gguf.GGUFReader(trained["adapter"])
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.lora.alpha").contents() == 16
    assert len(reader.tensors) == 2 * trained["adapted"] == 2 * 4 * 7  # A and B, 4 layers x 7 matrices

    ids = trained["ids"]
    base = llama_cpp_logits(bundled_model, ids, None, 1.0)
    changes = {}
    for scale in (1.0, 0.5):
        change = llama_cpp_logits(bundled_model, ids, trained["adapter"], scale) - base
        # The torch twin with its LoRA scaled the same way moves the logits the same way.
        torch_change = trained["twin_logits"][scale] - trained["base_logits"]
        assert np.corrcoef(torch_change.ravel(), change.ravel())[0, 1] > 0.9, scale
        assert np.abs(change).mean() == pytest.approx(np.abs(torch_change).mean(), rel=0.2), scale
        changes[scale] = np.abs(change).mean()
    assert changes[1.0] > 0.05  # the adapter changes the model
    assert 0.35 * changes[1.0] < changes[0.5] < 0.75 * changes[1.0]  # and half the scale, about half


def _adapter_tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


BUILD = ["--steps", "6", "--train-layers", "2", "--rank", "4", "--seed", "3"]


@pytest.fixture(scope="module")
def straight_twin(notes, twin_home) -> str:
    """A twin built in one go, as most people build it, with a merged model for runtimes without
    adapters (the README's `twin build --merge`)."""
    straight = lantern(twin_home, "twin", "build", str(notes), *BUILD, "--name", "straight", "--merge")
    assert straight.returncode == 0, straight.stderr
    assert "Twin straight: 6 steps" in straight.stdout
    assert "Merged model in the store as straight-merged" in straight.stderr
    return "straight"


def test_an_interrupted_build_resumes_to_the_same_twin(notes, twin_home, straight_twin):
    build = ["twin", "build", str(notes), *BUILD]

    # Interrupt a second build of the same twin after its second step, then resume it.
    env = {**os.environ, "LANTERN_HOME": str(twin_home)}
    process = subprocess.Popen(
        [str(LANTERN), *build, "--name", "resumed"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = ""
    deadline = time.monotonic() + 300
    while "2/6" not in stderr:
        assert time.monotonic() < deadline and process.poll() is None, stderr
        stderr += os.read(process.stderr.fileno(), 4096).decode(errors="replace")
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=120)[1]
    assert process.returncode == 130, stderr + rest
    assert "--resume" in rest
    checkpoint = twin_home / "twins" / "resumed" / "checkpoint.pt"
    assert checkpoint.is_file()

    resumed = lantern(twin_home, *build, "--name", "resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming at step" in resumed.stderr
    assert "Twin resumed: 6 steps" in resumed.stdout
    a = _adapter_tensors(twin_home / "twins" / "straight" / "adapter.gguf")
    b = _adapter_tensors(twin_home / "twins" / "resumed" / "adapter.gguf")
    assert a.keys() == b.keys()
    assert all(np.allclose(a[name], b[name], atol=1e-6) for name in a)  # nothing lost, nothing repeated


def test_ask_and_chat_with_the_twin_answer_through_its_adapter(twin_home, straight_twin):
    record = json.loads((twin_home / "twins" / straight_twin / "twin.json").read_text())
    trained_on = (twin_home / "twins" / straight_twin / "dataset" / "train.jsonl").read_text()
    question = "What do my notes say about try?"
    assert json.dumps(question) in trained_on  # a chat sample the twin learned from
    greedy = [question, "-t", "0", "--max-tokens", "16", "--no-memory"]

    twin = lantern(twin_home, "ask", "--twin", straight_twin, *greedy)
    base = lantern(twin_home, "ask", "-m", record["base_model"], *greedy)
    assert twin.returncode == 0 and base.returncode == 0, twin.stderr + base.stderr
    # Greedy answers from the same weights would be the same: the adapter changes the answer.
    assert twin.stdout.strip() and base.stdout.strip()
    assert twin.stdout != base.stdout

    chat = subprocess.run(
        [str(LANTERN), "chat", "--twin", straight_twin, *greedy[1:]],
        input=question + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LANTERN_HOME": str(twin_home)},
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout == twin.stdout  # `chat --twin` is the same twin as `ask --twin`


def test_a_phone_picks_the_twin_over_the_api_and_it_answers_as_the_twin_does_in_the_terminal(
    twin_home, straight_twin, monkeypatch
):
    import openai

    from tests.api_server import start_server

    record = json.loads((twin_home / "twins" / straight_twin / "twin.json").read_text())
    question = "What do my notes say about try?"
    terminal = lantern(
        twin_home, "ask", "--twin", straight_twin, question, "-t", "0", "--max-tokens", "16", "--no-memory"
    )
    assert terminal.returncode == 0, terminal.stderr
    monkeypatch.setenv("LANTERN_HOME", str(twin_home))
    server = start_server(max_loaded_models=2)
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=server.token, max_retries=0)
        assert straight_twin in [m.id for m in client.models.list()]
        answers = {}
        for model in (straight_twin, record["base_model"]):
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=16
            )
            answers[model] = reply.choices[0].message.content
            assert reply.model == model
    finally:
        server.stop()
    # The scheduler's own context carries the adapter: the twin answers as `ask --twin` does.
    assert answers[straight_twin] == terminal.stdout.strip()
    assert answers[straight_twin] != answers[record["base_model"]]


def test_twin_eval_finds_the_twin_better_than_its_base_on_unseen_notes(twin_home, straight_twin):
    report = lantern(twin_home, "twin", "eval", straight_twin, "--json")
    assert report.returncode == 0, report.stderr
    measured = json.loads(report.stdout)
    assert measured["text"] == "held-out notes" and measured["tokens_scored"] > 500
    # Six steps on the other pydoc topics already lower the perplexity of the held-out ones (about 3%).
    assert 1 < measured["twin_ppl"] < 0.99 * measured["base_ppl"]
    assert measured["reduction"] == pytest.approx(1 - measured["twin_ppl"] / measured["base_ppl"])
    listed = lantern(twin_home, "twin", "list").stdout
    assert f"ppl {measured['base_ppl']:.2f} -> {measured['twin_ppl']:.2f}" in listed


def _dequantized(tensor) -> np.ndarray:
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float64)


def test_a_merged_twin_is_its_base_with_the_adapter_added_and_rounded_again(
    twin_home, straight_twin, bundled_model
):
    record = json.loads((twin_home / "twins" / straight_twin / "twin.json").read_text())
    assert record["merged_model"] == "straight-merged"
    info = json.loads(lantern(twin_home, "models", "info", "straight-merged", "--json").stdout)
    assert info["quantization"] == "Q4_1"  # re-quantized to the base's type
    base = {t.name: t for t in gguf.GGUFReader(bundled_model).tensors}
    merged = {t.name: t for t in gguf.GGUFReader(info["path"]).tensors}
    adapter = gguf.GGUFReader(twin_home / "twins" / straight_twin / "adapter.gguf")
    lora = {t.name: np.array(t.data, dtype=np.float64) for t in adapter.tensors}
    adapted = {name.removesuffix(".lora_a") for name in lora if name.endswith(".lora_a")}
    assert len(adapted) == 2 * 7  # --train-layers 2, 7 matrices each

    # Every tensor the adapter does not touch is the base's, bit for bit; each one it adapts changed.
    assert merged.keys() == base.keys()
    assert all(merged[name].tensor_type == base[name].tensor_type for name in base)
    assert {name for name in base if not np.array_equal(merged[name].data, base[name].data)} == adapted

    # Rounding to Q4_1 again loses most of the small change, but what is left goes the adapter's
    # way: in every adapted matrix the change follows alpha/rank * B @ A (about 0.08 correlation
    # over 110k to 885k weights; a merge without the adapter or against it would give 0 or less).
    alpha = adapter.get_field("adapter.lora.alpha").contents()
    for name in sorted(adapted):
        a, b = lora[f"{name}.lora_a"], lora[f"{name}.lora_b"]
        added = alpha / a.shape[0] * (b @ a)
        change = _dequantized(merged[name]) - _dequantized(base[name])
        assert np.corrcoef(change.ravel(), added.ravel())[0, 1] > 0.03, name


def test_bad_inputs_get_clear_errors(twin_home, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "photo.jpg").write_bytes(bytes(range(256)) * 4)
    (binary / "notes.txt").write_bytes(b"\x00\x01\x02 binary pretending to be text")
    gpt2 = tmp_path / "gpt2.gguf"
    write_one_tensor_gguf(gpt2, "gpt2")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# a\n\n" + topics["assert"])

    cases = [
        (["twin", "build", str(empty), "--steps", "1"], "no readable notes"),
        (["twin", "build", str(binary), "--steps", "1"], "binary"),
        (["twin", "build", str(tmp_path / "missing"), "--steps", "1"], "does not exist"),
        (["twin", "build", str(notes), "--steps", "1", "--base", str(gpt2)], "'gpt2' model"),
        (["twin", "build", str(notes), "--epochs", "0"], "--epochs must be more than 0"),
        (["twin", "build", str(notes), "--steps", "1", "--name", "../x"], "invalid model name"),
        (["twin", "eval", "nobody"], "no twin named 'nobody'"),
        (["ask", "--twin", "nobody", "hi"], "no model named 'nobody'"),
    ]
    for args, message in cases:
        result = lantern(twin_home, *args)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_preference_tuning_learns_from_ratings(twin_home, straight_twin):
    from app.assistant import Assistant

    assistant = Assistant(twin_home)
    try:
        settings = assistant.settings(max_tokens=16, temperature=0)
        for question, better in [
            ("What does assert do?", "It checks a condition and raises AssertionError when it is false."),
            ("What is a lambda?", "A small anonymous function written as one expression."),
        ]:
            turn = assistant.ask(question, settings=settings, use_memory=False)
            "".join(turn)
            conversation = assistant.conversations.get(turn.conversation.id)
            answer = conversation.messages[-1]
            assistant.conversations.add_feedback(conversation.id, answer.id, -1, edited=better)
    finally:
        assistant.close()
    tuned = lantern(twin_home, "twin", "tune-prefs", straight_twin, "--steps", "2")
    assert tuned.returncode == 0, tuned.stderr
    assert "2 preference pairs" in tuned.stderr and "in 2 DPO steps" in tuned.stdout
    folder = twin_home / "twins" / straight_twin
    before, after = (
        _adapter_tensors(folder / "adapter-before-prefs.gguf"),
        _adapter_tensors(folder / "adapter.gguf"),
    )
    assert before.keys() == after.keys()
    assert any(not np.array_equal(before[name], after[name]) for name in before)
    answer = lantern(
        twin_home, "ask", "--twin", straight_twin, "What does assert do?", "-t", "0", "--no-memory",
        "--max-tokens", "16",
    )  # fmt: skip
    assert answer.returncode == 0 and answer.stdout.strip()


def test_the_trainer_runs_unchanged_under_torchrun(notes, tmp_path):
    """Two processes on this machine (gloo, DDP): they agree on every step and one writes the twin."""
    home = tmp_path / "home"
    env = {**os.environ, "LANTERN_HOME": str(home)}
    command = [
        str(LANTERN.parent / "torchrun"),
        "--nproc-per-node",
        "2",
        "--master-port",
        "29533",
        "--no-python",
        str(LANTERN),
        "twin",
        "build",
        str(notes),
        "--name",
        "pair",
        "--steps",
        "2",
        "--train-layers",
        "1",
        "--rank",
        "2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes (DDP over gloo)" in result.stderr
    assert result.stdout.count("Twin pair: 2 steps") == 1  # the first process reports for both
    record = json.loads((home / "twins" / "pair" / "twin.json").read_text())
    assert record["trained"] and record["training"]["processes"] == 2
    assert (home / "twins" / "pair" / "adapter.gguf").is_file()


def test_a_base_model_without_a_chat_template_trains_its_chat_samples_in_the_turns_lantern_chats_in():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from quantize.twin.dataset import TwinSample, render_sample

    sample = TwinSample("chat", "note.md", "The answer.", "A question?")
    for special, expected in (
        (
            ["<start_of_turn>", "<end_of_turn>"],
            "<start_of_turn>user\nA question?<end_of_turn>\n<start_of_turn>model\n",
        ),
        (["<|im_start|>", "<|im_end|>"], "<|im_start|>user\nA question?<|im_end|>\n<|im_start|>assistant\n"),
    ):
        bare = Tokenizer(models.WordLevel({"<unk>": 0, "<bos>": 1}, unk_token="<unk>"))
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=bare, unk_token="<unk>", bos_token="<bos>")
        tokenizer.add_special_tokens({"additional_special_tokens": special})
        assert tokenizer.chat_template is None
        assert expected in render_sample(sample, tokenizer)
