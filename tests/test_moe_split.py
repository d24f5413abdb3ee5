"""`lantern moe split`: a dense model's feed-forward blocks cut into experts on the user's notes.

With every expert active the split computes the dense model; with fewer, llama.cpp runs the file as
the MoE torch holds; the file is a real MoE in the store; the real SmolLM2 splits and generates; a
short recovery does not make the notes' loss worse; bad requests are refused in one line and leave
the store as it was. Tiny random llamas come from tests/tiny_models.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics

import gguf
import numpy as np
import pytest

from tests.conftest import lantern_at as lantern
from tests.gguf_fixtures import llama_cpp_logits, write_tiny_qwen3moe
from tests.tiny_models import tiny_folder


@pytest.fixture(scope="module")
def dense(small_tokenizer, tmp_path_factory):
    """A tiny random dense llama as an F32 GGUF, and its torch model read back from that file."""
    from quantize.gguf_export import export_gguf
    from quantize.sources import gguf_source, resolve_source
    from quantize.torch_bridge import load_torch_model

    folder, _ = tiny_folder("llama", small_tokenizer, tmp_path_factory.mktemp("dense"))
    path = folder.parent / "tiny-llama.gguf"
    export_gguf(load_torch_model(resolve_source(str(folder), None)), path, "F32", name="tiny-llama")
    return path, load_torch_model(gguf_source(path, "tiny-llama"))


@pytest.fixture(scope="module")
def split_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("split-home")


STEPS = 6  # recovery steps: a count, not minutes, so every machine trains the same


def _ids(torch_model) -> list[int]:
    return torch_model.tokenizer.encode(topics["if"], add_special_tokens=False)[:200]


def _split(dense, tiny_notes, tmp_path, experts, top_k, steps=None):
    """The split as the command makes it, written to a file: (result, path)."""
    from quantize.gguf_export import write_gguf
    from quantize.moe.dense_split import SplitRequest, split_dense_model
    from quantize.moe.moefied_model import moe_metadata
    from quantize.notes_text import read_notes

    _, torch_model = dense
    request = SplitRequest(experts, top_k, recover_steps=steps)
    result = split_dense_model(
        torch_model.model, torch_model.tokenizer, read_notes(tiny_notes), request, print
    )
    path = tmp_path / f"split-{experts}x{top_k}.gguf"
    metadata = moe_metadata(torch_model.carried_metadata, result.model.config)
    write_gguf(result.model, path, "F32", carried=metadata, name="split")
    return result, path


def _torch_logits(model, ids) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _moe_logits(path, ids) -> np.ndarray:
    """llama.cpp's logits with an F32 KV cache: with F16 attention inputs the hidden states differ
    from torch's by about 1e-3, enough to route a near-tied token differently, and that token's
    change reaches every later position through attention."""
    return llama_cpp_logits(path, ids, f32_cache=True)


def _agree(torch_logits, llama_logits) -> None:
    """llama.cpp and torch differ by float rounding only; a token whose two best experts are that
    close may still be routed differently, so a rare position may differ more."""
    per_position = np.abs(torch_logits - llama_logits).max(axis=1)
    assert np.median(per_position) < 0.01, per_position
    assert (per_position < 0.05).mean() >= 0.98, per_position
    assert (torch_logits.argmax(1) == llama_logits.argmax(1)).mean() >= 0.98


def test_with_every_expert_active_the_split_computes_the_dense_model(dense, tiny_notes, tmp_path):
    path, torch_model = dense
    ids = _ids(torch_model)
    result, split = _split(dense, tiny_notes, tmp_path, experts=4, top_k=4)
    assert np.abs(_torch_logits(result.model, ids) - _torch_logits(torch_model.model, ids)).max() < 1e-4
    assert np.abs(llama_cpp_logits(split, ids) - llama_cpp_logits(path, ids)).max() < 2e-3
    assert result.active_parameters == result.parameters


def test_with_fewer_experts_llama_cpp_runs_the_moe_torch_holds(dense, tiny_notes, tmp_path):
    path, torch_model = dense
    ids = _ids(torch_model)
    result, split = _split(dense, tiny_notes, tmp_path, experts=4, top_k=2)
    moe_logits = _moe_logits(split, ids)
    _agree(_torch_logits(result.model, ids), moe_logits)
    assert np.abs(moe_logits - llama_cpp_logits(path, ids)).max() > 0.1  # really only 2 of 4 experts ran
    assert all(0.5 < recall <= 1.0 for recall in result.router_recall)  # better than chance (0.5)


def test_a_short_recovery_keeps_or_lowers_the_loss_and_the_file_still_agrees(dense, tiny_notes, tmp_path):
    _, torch_model = dense
    ids = _ids(torch_model)
    result, split = _split(dense, tiny_notes, tmp_path, experts=4, top_k=2, steps=STEPS)
    assert result.recovery is not None and result.recovery.steps > 0
    assert result.recovery.loss_after <= result.recovery.loss_before
    _agree(_torch_logits(result.model, ids), _moe_logits(split, ids))


def test_a_recovery_that_does_not_help_is_undone(dense, tiny_notes, tmp_path, monkeypatch):
    """Named fake: whether a short training lowers the held-out loss is up to chance, so the loss
    is made to rise; what is checked is that undoing it gives back the split exactly."""
    import quantize.moe.recovery as recovery

    _, torch_model = dense
    ids = _ids(torch_model)
    untrained, _ = _split(dense, tiny_notes, tmp_path, experts=4, top_k=2)
    losses = iter([1.0, 2.0])
    monkeypatch.setattr(recovery, "sequences_loss", lambda model, sequences: next(losses))
    result, split = _split(dense, tiny_notes, tmp_path, experts=4, top_k=2, steps=STEPS)
    assert result.recovery is not None and result.recovery.steps > 0 and not result.recovery.kept
    assert np.array_equal(_torch_logits(result.model, ids), _torch_logits(untrained.model, ids))
    _agree(_torch_logits(result.model, ids), _moe_logits(split, ids))


def test_the_split_is_an_moe_in_the_store(dense, tiny_notes, split_home):
    path, _ = dense
    args = ("moe", "split", str(path), "--experts", "4", "--top-k", "2", "--calibrate", str(tiny_notes))
    done = lantern(split_home, *args, "--name", "tiny-moe", "--type", "F32")
    assert done.returncode == 0, done.stderr
    assert "Router recall" in done.stdout and "active per token" in done.stdout
    reader = gguf.GGUFReader(split_home / "models" / "tiny-moe.gguf")
    assert reader.get_field("llama.expert_count").contents() == 4
    assert reader.get_field("llama.expert_used_count").contents() == 2
    assert reader.get_field("llama.feed_forward_length").contents() == 32
    names = {tensor.name for tensor in reader.tensors}
    for kind in ("ffn_gate_inp.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"):
        assert f"blk.0.{kind}" in names
    assert "tokenizer.chat_template" in reader.fields
    info = json.loads(lantern(split_home, "models", "info", "tiny-moe", "--json").stdout)
    assert info["active_parameter_count"] < info["parameter_count"]


def test_smollm2_splits_into_eight_experts_then_routes_prunes_and_generates(bundled_model, tmp_path):
    """The real default model: split, its routing measured, pruned to half its experts, and both
    files generate in llama.cpp."""
    import llama_cpp

    calibration = tmp_path / "notes"
    calibration.mkdir()
    (calibration / "class.md").write_text(f"# class\n\n{topics['class']}", encoding="utf-8")
    home = tmp_path / "home"
    args = (
        "moe",
        "split",
        str(bundled_model),
        "--experts",
        "8",
        "--top-k",
        "2",
        "--calibrate",
        str(calibration),
    )
    done = lantern(home, *args, "--name", "smol-moe")
    assert done.returncode == 0, done.stderr

    text = tmp_path / "text.txt"
    text.write_text(topics["for"], encoding="utf-8")
    report = lantern(home, "moe", "stats", "smol-moe", "--text", str(text), "--json")
    assert report.returncode == 0, report.stderr
    routing = json.loads(report.stdout)
    assert routing["expert_count"] == 8 and routing["experts_used"] == 2 and len(routing["layers"]) == 30
    for layer in routing["layers"]:
        assert sum(layer["counts"]) == routing["tokens"] * 2

    pruned = lantern(home, "moe", "prune", "smol-moe", "--calibrate", str(calibration), "--keep", "0.5")
    assert pruned.returncode == 0, pruned.stderr
    half = home / "models" / "smol-moe-reap-4of8.gguf"
    assert gguf.GGUFReader(half).get_field("llama.expert_count").contents() == 4

    for model in (home / "models" / "smol-moe.gguf", half):
        llm = llama_cpp.Llama(model_path=str(model), n_ctx=256, verbose=False)
        try:
            answer = llm("The capital of France is", max_tokens=8, temperature=0)["choices"][0]["text"]
        finally:
            llm.close()
        assert answer.strip()


@pytest.fixture(scope="module")
def odd_inputs(tmp_path_factory, small_tokenizer):
    root = tmp_path_factory.mktemp("odd")
    write_tiny_qwen3moe(root / "tiny-qwen3moe.gguf")
    qwen2, _ = tiny_folder("qwen2", small_tokenizer, root)
    (root / "empty").mkdir()
    return root, qwen2


@pytest.mark.parametrize(
    "case, expected",
    [
        ("moe", "already a Mixture-of-Experts"),
        ("top-k-over", "--top-k 5: the experts used per token must be between 1 and --experts (4)"),
        ("top-k-zero", "--top-k 0"),
        ("one-expert", "--experts 1: a Mixture-of-Experts needs at least 2 experts"),
        ("indivisible", "do not split into 3 equal experts"),
        ("empty-notes", "no readable notes in"),
        ("missing-notes", "does not exist"),
        ("qwen2", "handles dense llama-family models"),
    ],
)
def test_bad_requests_are_refused_in_one_line_and_leave_the_store_unchanged(
    case,
    expected,
    dense,
    tiny_notes,
    odd_inputs,
    split_home,
):
    root, qwen2 = odd_inputs
    model, experts, top_k, calibration = str(dense[0]), "4", "2", str(tiny_notes)
    if case == "moe":
        model = str(root / "tiny-qwen3moe.gguf")
    elif case == "qwen2":
        model = str(qwen2)
    elif case == "empty-notes":
        calibration = str(root / "empty")
    elif case == "missing-notes":
        calibration = str(root / "absent")
    else:
        experts, top_k = {"top-k-over": ("4", "5"), "top-k-zero": ("4", "0"), "one-expert": ("1", "1")}.get(
            case, ("3", "1")
        )
    before = (
        sorted(p.name for p in (split_home / "models").glob("*")) if (split_home / "models").exists() else []
    )
    done = lantern(
        split_home, "moe", "split", model, "--experts", experts, "--top-k", top_k, "--calibrate", calibration
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and expected in errors[0], done.stderr
    after = (
        sorted(p.name for p in (split_home / "models").glob("*")) if (split_home / "models").exists() else []
    )
    assert after == before


def test_ctrl_c_during_the_recovery_leaves_nothing_in_the_store(dense, tiny_notes, tmp_path):
    import os
    import signal
    import subprocess

    from tests.conftest import LANTERN

    path, _ = dense
    home = tmp_path / "home"
    args = ("moe", "split", str(path), "--experts", "4", "--top-k", "2", "--calibrate", str(tiny_notes))
    process = subprocess.Popen(
        [str(LANTERN), *args, "--recover-minutes", "5", "--name", "interrupted"],
        env={**os.environ, "LANTERN_HOME": str(home)},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    for line in process.stderr:  # the split is written only after the recovery
        if line.startswith("Recovering"):
            break
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    process.wait(timeout=120)
    assert process.returncode != 0 and "Traceback" not in rest
    assert not [leftover for leftover in home.rglob("*") if "interrupted" in leftover.name]
    listed = json.loads(lantern(home, "models", "list", "--json").stdout)
    assert "interrupted" not in {row["name"] for row in listed}
