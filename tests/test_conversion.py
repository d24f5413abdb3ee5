"""The conversion pipeline as a user meets it: GGUF into torch and back, quantization with llama.cpp,
measured quality, and every bad input refused with nothing left behind. Real SmolLM2 throughout."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.conftest import LANTERN
from tests.conftest import lantern_at as lantern
from tests.gguf_fixtures import write_one_tensor_gguf

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a list is in Python.",
]


@pytest.fixture(scope="module")
def store_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("convert-home")


def greedy_answers(path: Path, prompts: list[str] = PROMPTS) -> list[str]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, verbose=False)
    try:
        return [
            llm.create_chat_completion([{"role": "user", "content": q}], max_tokens=40, temperature=0)[
                "choices"
            ][0]["message"]["content"]
            for q in prompts
        ]
    finally:
        llm.close()


def tensors(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    return {t.name: (t.tensor_type.name, np.array(t.data)) for t in gguf.GGUFReader(path).tensors}


def files_in(*folders: Path) -> set[Path]:
    return {p for folder in folders for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def smollm_torch(bundled_model):
    from quantize.sources import gguf_source
    from quantize.torch_bridge import load_torch_model

    return load_torch_model(gguf_source(bundled_model, "smollm2"))


@pytest.fixture(scope="module")
def f16_export(smollm_torch, tmp_path_factory) -> Path:
    from quantize.gguf_export import export_gguf

    out = tmp_path_factory.mktemp("f16") / "smollm2-f16.gguf"
    export_gguf(smollm_torch, out, "F16")
    return out


@pytest.fixture(scope="module")
def f16_answers(f16_export) -> list[str]:
    """The F16 export's greedy answers, which every file converted from it must give too."""
    return greedy_answers(f16_export)


def test_torch_logits_agree_with_llama_cpp(smollm_torch, f16_export, bundled_model):
    from quantize.fidelity import compare_logits

    same_weights = compare_logits(smollm_torch, f16_export, positions=256)
    assert same_weights.positions == 256
    assert same_weights.top1_agreement >= 0.99
    assert same_weights.max_abs_diff < 0.5

    # On the Q4_1 file itself llama.cpp also rounds activations to 8 bits inside every quantized
    # matrix product, so near-ties can flip; agreement stays high but not perfect.
    quantized = compare_logits(smollm_torch, bundled_model, positions=256)
    assert quantized.top1_agreement >= 0.93


def test_round_trip_through_torch_is_lossless(store_home, smollm_torch, bundled_model, tmp_path):
    # Q4_1 -> torch -> F32 GGUF -> llama.cpp's quantizer back to Q4_1: the very same tensors.
    from quantize.gguf_export import export_gguf

    f32 = tmp_path / "smollm2-f32.gguf"
    export_gguf(smollm_torch, f32, "F32")
    back = tmp_path / "back-q4_1.gguf"
    result = lantern(store_home, "quantize", str(f32), "--type", "Q4_1", "-o", str(back))
    assert result.returncode == 0, result.stderr
    original, rebuilt = tensors(bundled_model), tensors(back)
    assert original.keys() == rebuilt.keys()
    for name, (kind, data) in original.items():
        assert rebuilt[name][0] == kind, name
        assert np.array_equal(rebuilt[name][1], data), name
    assert greedy_answers(back) == greedy_answers(bundled_model)


def test_f16_round_trip_gives_identical_greedy_text(store_home, f16_export, f16_answers, tmp_path):
    # GGUF(F16) -> torch -> GGUF(F16): same tensors, same answers; chat template and tokenizer kept.
    again = tmp_path / "again-f16.gguf"
    result = lantern(store_home, "convert", str(f16_export), "-o", str(again), "--name", "again-f16")
    assert result.returncode == 0, result.stderr
    first, second = tensors(f16_export), tensors(again)
    assert all(np.array_equal(first[name][1], second[name][1]) for name in first)
    reader = gguf.GGUFReader(again)
    assert "im_start" in reader.get_field("tokenizer.chat_template").contents()
    answers = greedy_answers(again)
    assert answers == f16_answers
    assert "Paris" in answers[0]
    listed = json.loads(lantern(store_home, "models", "list", "--json").stdout)
    assert {"name": "again-f16", "path": str(again.resolve())}.items() <= next(
        m for m in listed if m["name"] == "again-f16"
    ).items()


def test_convert_verify_reports_how_closely_llama_cpp_follows_the_torch_model(store_home):
    from quantize.fidelity import Fidelity

    # The README's first conversion: the bundled Q4_1 into the store as F16, logits checked.
    result = lantern(store_home, "convert", "smollm2-135m-instruct", "--verify")
    assert result.returncode == 0, result.stderr
    report = re.compile(
        r"torch vs llama.cpp on the (\w+) file: top-1 agreement ([\d.]+)% over (\d+) positions, "
        r"max \|logit diff\| ([\d.]+) \(mean ([\d.]+)\)"
    )
    reports = {
        found[1]: Fidelity(int(found[3]), float(found[2]) / 100, float(found[4]), float(found[5]))
        for found in report.finditer(result.stderr)
    }
    assert reports.keys() == {"source", "written"}, result.stderr
    source, written = reports["source"], reports["written"]
    assert source.positions == written.positions == 256
    # The F16 file holds the torch model's weights: llama.cpp computes almost exactly its logits.
    assert written.top1_agreement >= 0.99 and written.max_abs_diff < 0.5
    # On the Q4_1 source llama.cpp also rounds activations to 8 bits: close, measurably less so.
    assert source.top1_agreement >= 0.93
    assert source.mean_abs_diff > written.mean_abs_diff
    info = json.loads(lantern(store_home, "models", "info", "smollm2-135m-instruct-f16", "--json").stdout)
    assert info["quantization"] == "F16"


def test_a_hugging_face_folder_converts_with_its_tokenizer(smollm_torch, f16_answers, tmp_path, store_home):
    folder = tmp_path / "hf-smollm2"
    smollm_torch.model.save_pretrained(folder)
    smollm_torch.tokenizer.save_pretrained(folder)
    out = tmp_path / "from-folder.gguf"
    result = lantern(store_home, "convert", str(folder), "-o", str(out), "--name", "from-folder")
    assert result.returncode == 0, result.stderr
    reader = gguf.GGUFReader(out)
    assert reader.get_field("tokenizer.ggml.pre").contents() == "smollm"  # found by trial, see hf_tokenizer
    assert greedy_answers(out) == f16_answers


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K_M"])
def test_quantized_exports_load_and_chat(store_home, f16_export, qtype):
    result = lantern(store_home, "quantize", str(f16_export), "--type", qtype, "--name", f"smollm2-{qtype}")
    assert result.returncode == 0, result.stderr
    info = json.loads(lantern(store_home, "models", "info", f"smollm2-{qtype}", "--json").stdout)
    assert info["quantization"] == qtype
    question = "What is the capital of France? Answer in one word."
    answer = lantern(
        store_home, "ask", "-m", f"smollm2-{qtype}", question, "--temperature", "0", "--no-memory"
    )
    assert answer.returncode == 0, answer.stderr
    assert "Paris" in answer.stdout


def test_importance_matrix_from_notes_changes_the_rounding(store_home, f16_export, tmp_path):
    from pydoc_data.topics import topics

    from quantize.quant_types import quant_type
    from quantize.quantizer import quantize_gguf

    notes = tmp_path / "notes"
    notes.mkdir()
    for topic in ("assert", "class", "while"):
        (notes / f"{topic}.md").write_text(f"# {topic}\n\n{topics[topic]}", encoding="utf-8")
    (notes / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # not a note: skipped
    plain, weighted = tmp_path / "plain.gguf", tmp_path / "weighted.gguf"
    quantize_gguf(f16_export, True, plain, quant_type("Q4_K_M"))
    result = lantern(
        store_home,
        "quantize",
        str(f16_export),
        "--type",
        "Q4_K_M",
        "-o",
        str(weighted),
        "--imatrix-from",
        str(notes),
    )
    assert result.returncode == 0, result.stderr
    assert "importance matrix from" in result.stdout
    a, b = tensors(plain), tensors(weighted)
    k_quants = [name for name in a if a[name][0] == "Q4_K"]
    assert k_quants and all(not np.array_equal(a[name][1], b[name][1]) for name in k_quants)
    # The weighted model still knows the capital of France.
    assert "Paris" in greedy_answers(weighted, PROMPTS[:1])[0]


def test_eval_ppl_and_compare(store_home, bundled_model, tmp_path):
    from quantize.fidelity import reference_text

    text = tmp_path / "text.txt"
    text.write_text(reference_text() * 2, encoding="utf-8")
    window = ["--window", "128", "--stride", "64", "--max-tokens", "384"]

    def measured(command: str, *models: str) -> dict:
        result = lantern(store_home, "eval", command, *models, "--text", str(text), "--json", *window)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    bundled = measured("ppl", str(bundled_model))
    assert 1 < bundled["perplexity"] < 200 and bundled["tokens_scored"] == 383

    same = measured("compare", str(bundled_model), str(bundled_model))
    assert same["kl_divergence"] < 1e-4 and same["top1_agreement"] == 1.0
    assert same["a"]["perplexity"] == pytest.approx(bundled["perplexity"], rel=1e-4)

    # Two re-quantizations of the bundled Q4_1: Q8_0 keeps nearly all of it, Q3_K_S rounds it coarsely.
    for qtype in ("Q8_0", "Q3_K_S"):
        made = lantern(
            store_home, "quantize", "smollm2-135m-instruct", "--type", qtype, "--name", f"bundled-{qtype}"
        )
        assert made.returncode == 0, made.stderr
    fine = measured("compare", "smollm2-135m-instruct", "bundled-Q8_0")
    coarse = measured("compare", "smollm2-135m-instruct", "bundled-Q3_K_S")
    for comparison in (fine, coarse):
        assert comparison["a"]["perplexity"] == pytest.approx(bundled["perplexity"], rel=1e-4)
        assert comparison["positions"] == 383
        assert 0 < comparison["kl_divergence"] < comparison["kl_divergence_p99"]
        assert 0 < comparison["top1_agreement"] < 1
    # B's perplexity is the one `eval ppl` measures for B alone.
    alone = measured("ppl", "bundled-Q3_K_S")
    assert coarse["b"]["perplexity"] == pytest.approx(alone["perplexity"], rel=1e-4)
    assert coarse["b"]["file_size"] < coarse["a"]["file_size"] < fine["b"]["file_size"]
    # The coarser rounding strays further from the bundled model, and is worse at the text.
    assert coarse["kl_divergence"] > 5 * fine["kl_divergence"]
    assert coarse["top1_agreement"] < fine["top1_agreement"]
    assert coarse["b"]["perplexity"] > 1.1 * bundled["perplexity"]
    assert fine["b"]["perplexity"] == pytest.approx(bundled["perplexity"], rel=0.02)

    # The table a person reads shows the same numbers.
    table = lantern(
        store_home, "eval", "compare", "smollm2-135m-instruct", "bundled-Q3_K_S", "--text", str(text), *window
    )
    assert table.returncode == 0, table.stderr
    rows = {line[:18].strip(): line[18:].split() for line in table.stdout.splitlines()}
    assert rows["perplexity"] == [f"{coarse['a']['perplexity']:.3f}", f"{coarse['b']['perplexity']:.3f}"]
    assert f"mean {coarse['kl_divergence']:.5f}" in table.stdout
    assert f"top-1 agreement {coarse['top1_agreement']:.2%} over 383 positions" in table.stdout


def test_bad_inputs_get_clear_errors_and_leave_nothing(store_home, bundled_model, f16_export, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    models_dir = store_home / "models"
    lantern(store_home, "models", "list")
    before = files_in(out_dir, models_dir)
    registry_before = (
        (store_home / "models.json").read_text() if (store_home / "models.json").exists() else None
    )

    gpt2 = tmp_path / "tiny-gpt2.gguf"
    write_one_tensor_gguf(gpt2, "gpt2")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(bundled_model.read_bytes()[: bundled_model.stat().st_size - 1_000_000])
    folder = tmp_path / "not-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    existing = out_dir / "exists.gguf"

    cases = [
        (["convert", str(gpt2), "-o", str(out_dir / "a.gguf")], "'gpt2' model"),
        (["convert", str(folder), "-o", str(out_dir / "b.gguf")], "'gpt2' model"),
        (["convert", str(truncated), "-o", str(out_dir / "c.gguf")], "truncated"),
        (["quantize", str(truncated), "--type", "Q8_0", "-o", str(out_dir / "d.gguf")], "truncated"),
        (["quantize", str(f16_export), "--type", "Q9_9", "-o", str(out_dir / "e.gguf")], "unsupported"),
        (
            ["quantize", str(f16_export), "--type", "IQ2_XXS", "-o", str(out_dir / "f.gguf")],
            "importance matrix",
        ),
        (["convert", str(f16_export), "--type", "Q4_0", "-o", str(out_dir / "g.gguf")], "lantern quantize"),
        (
            [
                "quantize",
                str(f16_export),
                "--type",
                "Q8_0",
                "-o",
                str(models_dir / "smollm2-135m-instruct.gguf"),
            ],
            "inside Lantern's model store",
        ),
        (
            ["quantize", str(f16_export), "--type", "Q8_0", "--name", "smollm2-135m-instruct"],
            "already exists",
        ),
        (["quantize", str(f16_export), "--type", "Q8_0", "--name", "../escape"], "invalid model name"),
        (["convert", "no-such-model"], "not a file, a folder or a model in the store"),
    ]
    existing.write_bytes(b"keep me")
    cases.append((["quantize", str(f16_export), "--type", "Q8_0", "-o", str(existing)], "--force"))
    for args, message in cases:
        result = lantern(store_home, *args)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
    assert existing.read_bytes() == b"keep me"
    assert files_in(out_dir, models_dir) == before | {existing}
    if registry_before is not None:
        assert (store_home / "models.json").read_text() == registry_before


def test_an_interrupted_quantization_leaves_no_file(store_home, f16_export, tmp_path):
    out = tmp_path / "interrupted.gguf"
    env = {**os.environ, "LANTERN_HOME": str(store_home)}
    process = subprocess.Popen(
        [
            str(LANTERN),
            "quantize",
            str(f16_export),
            "--type",
            "Q4_K_M",
            "-o",
            str(out),
            "--imatrix-from",
            str(Path(__file__).parent),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".interrupted.gguf.*.tmp")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    assert process.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_the_tokenizer_read_from_a_gguf_is_cached_and_tokenizes_the_same(tmp_path, bundled_model):
    from app.home import DataHome
    from app.model_store import ModelStore
    from quantize.hf_tokenizer import PROBE_TEXT
    from quantize.sources import resolve_source
    from quantize.torch_bridge import load_tokenizer

    store = ModelStore(DataHome.open(tmp_path / "home"))
    source = resolve_source(str(bundled_model), store)
    first = load_tokenizer(source)
    cached = list((tmp_path / "home" / "cache" / "tokenizers").iterdir())
    assert len(cached) == 1 and (cached[0] / "tokenizer.json").is_file()
    again = load_tokenizer(source)  # from the cache now
    for text in (PROBE_TEXT, "<|im_start|>user\nhi<|im_end|>"):
        for special in (True, False):
            assert again.encode(text, add_special_tokens=special) == first.encode(
                text, add_special_tokens=special
            )
    assert (again.bos_token, again.eos_token, len(again)) == (first.bos_token, first.eos_token, len(first))
