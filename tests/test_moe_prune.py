"""A user measures how a Mixture-of-Experts model routes their text (`lantern moe stats`) and prunes
the experts their notes never need (`lantern moe prune`), all through the real llama.cpp.

The model is a tiny random Qwen3-MoE (2 layers, width 64, 8 experts, 2 per token) built with
transformers' own classes. Its experts 6 and 7 are made unreachable: every token's hidden state
carries a large constant channel, and only those two router rows weigh it, strongly negative.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from pydoc_data.topics import topics

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from app.cli.main import cli
from tests.gguf_fixtures import llama_cpp_logits, write_one_tensor_gguf
from tests.tiny_models import tiny_config

EXPERTS, USED, DEAD = 8, 2, (6, 7)


@pytest.fixture(scope="module")
def moe_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("moe-home")


def lantern(home: Path, *args: str):
    """`lantern ARGS` in this process with ``home`` as the data home (stderr kept apart)."""
    return CliRunner().invoke(cli, list(args), env={"LANTERN_HOME": str(home)})


@pytest.fixture(scope="module")
def moe_gguf(small_tokenizer, tmp_path_factory) -> Path:
    import torch
    import transformers

    from quantize.gguf_export import export_gguf
    from quantize.sources import resolve_source
    from quantize.torch_bridge import load_torch_model

    tokenizer = transformers.AutoTokenizer.from_pretrained(small_tokenizer)
    config = tiny_config("qwen3moe", tokenizer)
    config.num_experts, config.num_experts_per_tok = EXPERTS, USED
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 8.0  # a channel every token carries, positive
        for layer in model.model.layers:
            # Only the routers of 6 and 7 read it; attention and experts ignore it, so what
            # varies from token to token still decides among the others.
            layer.input_layernorm.weight[0] = 0.0
            layer.mlp.experts.gate_up_proj[:, :, 0] = 0.0
            router = layer.mlp.gate.weight
            router[:, 0] = 0.0
            router[list(DEAD), 0] = -20.0
    folder = tmp_path_factory.mktemp("tiny-qwen3moe") / "tiny-moe"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    path = folder.parent / "tiny-moe.gguf"
    export_gguf(load_torch_model(resolve_source(str(folder), None)), path, "F32", name="tiny-moe")
    return path


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("moe-text") / "text.txt"
    path.write_text(topics["class"] + topics["for"], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def notes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("moe-notes")
    for topic in ("while", "try", "with"):
        (folder / f"{topic}.md").write_text(f"# {topic}\n\n{topics[topic]}", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def stored(moe_home, moe_gguf) -> str:
    result = lantern(moe_home, "models", "add", str(moe_gguf), "--name", "tiny-moe")
    assert result.exit_code == 0, result.output
    return "tiny-moe"


@pytest.fixture(scope="module")
def calibration_routing(moe_home, stored, notes, tmp_path_factory) -> dict:
    """The routing report on the notes' text, as the pruning sees it."""
    from quantize.notes_text import read_notes

    text = tmp_path_factory.mktemp("calibration") / "notes.txt"
    text.write_text("\n\n".join(note.text for note in read_notes(notes).notes), encoding="utf-8")
    result = lantern(moe_home, "moe", "stats", stored, "--text", str(text), "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _field(path: Path, key: str):
    field = gguf.GGUFReader(path).get_field(key)
    return None if field is None else field.contents()


def _kept_experts(source: Path, pruned: Path) -> list[list[int]]:
    """Per layer, which of the source's experts the pruned file holds (matched by router row)."""
    source_tensors = {t.name: np.array(t.data) for t in gguf.GGUFReader(source).tensors}
    kept = []
    for tensor in gguf.GGUFReader(pruned).tensors:
        if tensor.name.endswith("ffn_gate_inp.weight"):
            rows = source_tensors[tensor.name]
            kept.append([int(np.flatnonzero((rows == row).all(axis=1))[0]) for row in np.array(tensor.data)])
    return kept


def _store_path(home: Path, name: str) -> Path:
    return home / "models" / f"{name}.gguf"


def test_the_routing_report_counts_every_token_and_draws_the_heatmaps(moe_home, stored, text_file, tmp_path):
    png = tmp_path / "routing.png"
    result = lantern(moe_home, "moe", "stats", stored, "--text", str(text_file), "--json", "--png", str(png))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["expert_count"], report["experts_used"]) == (EXPERTS, USED)
    assert report["tokens"] > 1000 and [layer["layer"] for layer in report["layers"]] == [0, 1]
    for layer in report["layers"]:
        counts, saliency = np.array(layer["counts"]), np.array(layer["saliency"])
        assert counts.sum() == report["tokens"] * USED  # every token chose two experts in every layer
        assert (saliency >= 0).all() and ((saliency == 0) == (counts == 0)).all()
        assert list(np.flatnonzero(counts == 0)) == list(DEAD)  # the unreachable ones, and only they
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    cell = 24  # the largest cell: two panels (frequency, saliency) of 8 cells, a cell of gap
    assert (width, height) == ((2 * EXPERTS + 1) * cell, 2 * cell)

    shown = lantern(moe_home, "moe", "stats", stored, "--text", str(text_file))
    assert shown.exit_code == 0, shown.stderr
    assert f"{report['tokens']} tokens, 2 of 8 experts per token" in shown.stdout
    assert "Never chosen: 4 expert(s) (layer 0: 6, 7; layer 1: 6, 7)" in shown.stdout
    assert "Most used: layer" in shown.stdout


def test_pruning_half_the_experts_keeps_the_most_salient_and_the_model_generates(
    moe_home, stored, notes, calibration_routing
):
    import llama_cpp

    kept = {}
    for method in ("reap", "frequency"):
        name = f"half-{method}"
        result = lantern(
            moe_home, "moe", "prune", stored, "--calibrate", str(notes), "--keep", "0.5",
            "--method", method, "--name", name,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        assert f"Kept 4 of 8 experts in each of 2 layers ({method}" in result.stdout
        assert f"lantern quantize {name} " in result.stdout  # the pruned file is still F32
        path = _store_path(moe_home, name)
        assert _field(path, "qwen3moe.expert_count") == 4
        assert _field(path, "qwen3moe.expert_used_count") == USED
        kept[method] = _kept_experts(_store_path(moe_home, stored), path)

    for row, layer in enumerate(calibration_routing["layers"]):
        for method, key in (("reap", "saliency"), ("frequency", "counts")):
            scores = np.array(layer[key], dtype=float)
            chosen = kept[method][row]
            assert min(scores[chosen]) >= max(np.delete(scores, chosen)), (method, layer)
    # On these notes the two measures disagree somewhere: the most used are not the most salient.
    assert kept["reap"] != kept["frequency"]

    llm = llama_cpp.Llama(model_path=str(_store_path(moe_home, "half-reap")), n_ctx=128, verbose=False)
    try:
        text = llm.create_completion("class Point:", max_tokens=8, temperature=0)["choices"][0]["text"]
    finally:
        llm.close()
    assert text


def test_pruning_only_never_routed_experts_leaves_the_logits_unchanged(moe_home, stored, notes):
    import llama_cpp

    result = lantern(moe_home, "moe", "prune", stored, "--calibrate", str(notes), "--keep", "0.75")
    assert result.exit_code == 0, result.stderr
    assert "layer   0: 6, 7" in result.stdout and "layer   1: 6, 7" in result.stdout
    source, pruned = _store_path(moe_home, stored), _store_path(moe_home, "tiny-moe-reap-6of8")
    llm = llama_cpp.Llama(model_path=str(source), n_ctx=64, vocab_only=True, verbose=False)
    ids = llm.tokenize(topics["while"].encode(), add_bos=False)[:200]
    llm.close()
    # Qwen3-MoE renormalises the two chosen weights, and the chosen two never included 6 or 7.
    np.testing.assert_allclose(llama_cpp_logits(pruned, ids), llama_cpp_logits(source, ids), atol=1e-4)


def test_a_quantized_moe_model_prunes_without_dequantising(moe_home, stored, notes):
    quantized = lantern(moe_home, "quantize", stored, "--type", "Q8_0", "--name", "tiny-moe-q8")
    assert quantized.exit_code == 0, quantized.stderr
    result = lantern(
        moe_home,
        "moe",
        "prune",
        "tiny-moe-q8",
        "--calibrate",
        str(notes),
        "--keep",
        "0.5",
        "--name",
        "q8-half",
    )
    assert result.exit_code == 0, result.stderr
    assert "lantern quantize" not in result.stdout
    source = {t.name: t for t in gguf.GGUFReader(_store_path(moe_home, "tiny-moe-q8")).tensors}
    pruned = gguf.GGUFReader(_store_path(moe_home, "q8-half")).tensors
    assert {t.name for t in pruned} == set(source)
    assert source["blk.0.ffn_up_exps.weight"].tensor_type.name == "Q8_0"
    kept = _kept_experts(_store_path(moe_home, "tiny-moe-q8"), _store_path(moe_home, "q8-half"))
    for tensor in pruned:
        assert tensor.tensor_type == source[tensor.name].tensor_type, tensor.name
        original = np.array(source[tensor.name].data)
        if "_exps" in tensor.name or "gate_inp" in tensor.name:
            original = original[kept[int(tensor.name.split(".")[1])]]  # the same bytes, fewer experts
        assert np.array_equal(np.array(tensor.data), original), tensor.name


def test_bad_requests_get_one_line_and_leave_the_store_unchanged(
    moe_home, stored, notes, text_file, tmp_path
):
    dense = tmp_path / "dense.gguf"
    write_one_tensor_gguf(dense, "llama")
    empty_folder = tmp_path / "no-notes"
    empty_folder.mkdir()
    short_notes = tmp_path / "short"
    short_notes.mkdir()
    (short_notes / "hi.md").write_text("Hello there.", encoding="utf-8")
    empty_text = tmp_path / "empty.txt"
    empty_text.write_text("  \n", encoding="utf-8")
    binary_text = tmp_path / "binary.txt"
    binary_text.write_bytes(b"\xff\xfe\x00\x81 not text")
    prune = ["moe", "prune", stored, "--calibrate", str(notes)]
    cases = [
        ([*prune, "--keep", "0.1"], "leaves 1 of 8 experts per layer, fewer than the 2"),
        ([*prune, "--keep", "0"], "--keep must be a fraction in (0, 1]"),
        ([*prune, "--keep", "1.5"], "--keep must be a fraction in (0, 1]"),
        ([*prune, "--keep", "0.5", "--method", "random"], "unknown pruning method 'random'"),
        (["moe", "prune", str(dense), "--calibrate", str(notes), "--keep", "0.5"], "is dense: no experts"),
        (["moe", "prune", stored, "--calibrate", str(empty_folder), "--keep", "0.5"], "no readable notes"),
        (["moe", "prune", stored, "--calibrate", str(tmp_path / "gone"), "--keep", "0.5"], "does not exist"),
        (["moe", "prune", stored, "--calibrate", str(short_notes), "--keep", "0.5"], "give at least 64"),
        (["moe", "stats", str(dense), "--text", str(text_file)], "is dense: no experts"),
        (["moe", "stats", stored, "--text", str(empty_text)], "holds no text to route"),
        (["moe", "stats", stored, "--text", str(binary_text)], "is not UTF-8 text"),
    ]
    before = lantern(moe_home, "models", "list", "--json").stdout
    files = sorted((moe_home / "models").iterdir())
    for args, message in cases:
        result = lantern(moe_home, *args)
        assert result.exit_code == 1, (args, result.output)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and message in errors[0], (args, result.stderr)  # after any progress line
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
    assert lantern(moe_home, "models", "list", "--json").stdout == before
    assert sorted((moe_home / "models").iterdir()) == files
