"""Every family a user may bring — llama, Qwen2, Qwen3, Gemma 3, Phi-3 and the Mixture-of-Experts
Qwen2-MoE and Qwen3-MoE — through the pipeline: a Hugging Face folder converts with `lantern
convert`, llama.cpp computes what torch computes, the file goes back to torch and out again unchanged,
quantizes with an importance matrix from notes, and a twin adapter moves llama.cpp as it moves torch.

The models are tiny and random (two layers, width 64, a 512-token BPE vocabulary trained here on
Python's pydoc topics), built with transformers' own classes: seconds per family, nothing
downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from pydoc_data.topics import topics

import gguf
import numpy as np
import pytest

from tests.conftest import lantern_at as lantern
from tests.gguf_fixtures import llama_cpp_logits, write_one_tensor_gguf
from tests.tiny_models import tiny_folder

FAMILIES = ["llama", "qwen2", "qwen3", "gemma3", "phi3", "qwen2moe", "qwen3moe"]
MOE = {"qwen2moe", "qwen3moe"}


@pytest.fixture(scope="module")
def family_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("families-home")


@dataclass(frozen=True)
class Converted:
    family: str
    folder: Path  # the Hugging Face folder
    gguf: Path  # what `lantern convert --type F32` wrote
    config: object


@pytest.fixture(scope="module", params=FAMILIES)
def converted(request, small_tokenizer, family_home, tmp_path_factory) -> Converted:
    family = request.param
    folder, config = tiny_folder(family, small_tokenizer, tmp_path_factory.mktemp(family))
    out = folder.parent / f"{folder.name}.gguf"
    result = lantern(family_home, "convert", str(folder), "--type", "F32", "-o", str(out))
    assert result.returncode == 0, result.stderr
    return Converted(family, folder, out, config)


def _torch(path: Path):
    from quantize.sources import gguf_source
    from quantize.torch_bridge import load_torch_model

    return load_torch_model(gguf_source(path, path.stem))


def _field(path: Path, key: str):
    field = gguf.GGUFReader(path).get_field(key)
    return None if field is None else field.contents()


def test_llama_cpp_computes_what_torch_computes(converted):
    from quantize.fidelity import compare_logits
    from quantize.sources import resolve_source
    from quantize.torch_bridge import load_torch_model

    assert _field(converted.gguf, "general.architecture") == converted.family
    fidelity = compare_logits(load_torch_model(resolve_source(str(converted.folder), None)), converted.gguf)
    assert fidelity.positions == 256
    assert fidelity.max_abs_diff < 0.05 and fidelity.mean_abs_diff < 0.005, fidelity
    # Both pick the same next token wherever the pick is not a tie within that difference; a random
    # model of 512 tokens has a few such ties, which float rounding alone decides.
    assert fidelity.decisive_top1_agreement == 1.0 and fidelity.decisive_positions >= 240, fidelity
    assert fidelity.top1_agreement >= 0.99, fidelity
    if converted.family in MOE:  # with top-2 of 4 experts routed in both
        assert _field(converted.gguf, f"{converted.family}.expert_count") == 4
        assert _field(converted.gguf, f"{converted.family}.expert_used_count") == 2


def test_gguf_to_torch_and_back_gives_identical_tensors(converted, tmp_path):
    from quantize.gguf_export import export_gguf

    again = tmp_path / "again.gguf"
    export_gguf(_torch(converted.gguf), again, "F32")
    first = {t.name: np.array(t.data) for t in gguf.GGUFReader(converted.gguf).tensors}
    second = {t.name: np.array(t.data) for t in gguf.GGUFReader(again).tensors}
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[name], second[name]) for name in first)
    for key in ("expert_count", "expert_used_count", "expert_feed_forward_length", "attention.key_length"):
        assert _field(again, f"{converted.family}.{key}") == _field(
            converted.gguf, f"{converted.family}.{key}"
        )


def test_q8_0_with_an_importance_matrix_from_notes_loads_and_generates(converted, tiny_notes, tmp_path):
    import llama_cpp

    from quantize.imatrix import compute_importance_matrix
    from quantize.notes_text import read_notes
    from quantize.quant_types import quant_type
    from quantize.quantizer import quantize_gguf

    torch_model = _torch(converted.gguf)
    imatrix = compute_importance_matrix(torch_model, read_notes(tiny_notes), max_tokens=1024)
    # Every matrix llama.cpp quantizes has its column statistics (routers stay F32, stacked experts
    # are no linear layers in torch, the embedding is a lookup).
    quantized_names = {
        t.name
        for t in gguf.GGUFReader(converted.gguf).tensors
        if len(t.shape) == 2 and "gate_inp" not in t.name
    }
    assert quantized_names - set(imatrix.values) <= {"token_embd.weight"}  # tied: the output matrix
    q8 = tmp_path / "q8.gguf"
    quantize_gguf(converted.gguf, True, q8, quant_type("Q8_0"), imatrix)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(q8).tensors}
    assert types["blk.0.attn_output.weight"] == "Q8_0"
    llm = llama_cpp.Llama(model_path=str(q8), n_ctx=256, verbose=False)
    try:
        text = llm.create_completion("class Point:", max_tokens=8, temperature=0)["choices"][0]["text"]
    finally:
        llm.close()
    assert text


def test_a_twin_adapter_moves_llama_cpp_as_it_moves_torch(converted, tmp_path):
    import torch

    from quantize.twin.adapter_export import export_lora_gguf
    from quantize.twin.trainer import TwinTrainer, add_lora
    from quantize.twin.training_config import TrainingConfig

    torch_model = _torch(converted.gguf)
    ids = torch_model.tokenizer.encode(
        topics["class"] + topics["while"] + topics["for"], add_special_tokens=False
    )
    sequences = [ids[start : start + 64] for start in range(0, 512, 64)]
    probe = torch.tensor([ids[600:664]])
    with torch.no_grad():
        base = torch_model.model(input_ids=probe).logits[0].numpy()
    experts = "all" if converted.family in MOE else "shared"  # LoRA on every expert too
    config = TrainingConfig(
        rank=4,
        alpha=8,
        train_layers=2,
        batch_size=2,
        max_steps=8,
        learning_rate=1e-2,
        sequence_length=64,
        warmup_steps=1,
        precision="fp32",
        compile="off",
        moe_experts=experts,
    )
    peft_model, cut = add_lora(torch_model.model, config)
    state = TwinTrainer(peft_model, cut, sequences, config, tmp_path / "checkpoints").run()
    assert np.mean(state.losses[-2:]) < np.mean(state.losses[:2])
    adapter = tmp_path / "adapter.gguf"
    adapted = export_lora_gguf(peft_model, adapter, "tiny-twin")
    # Per layer: attention q, k, v, o (Phi-3: qkv, o) and the MLP's gate, up, down (Phi-3: gate_up,
    # down); on MoE the experts' gate, up and down, and Qwen2-MoE's shared expert's too.
    assert adapted == {"phi3": 2 * 4, "qwen2moe": 2 * 10}.get(converted.family, 2 * 7)
    names = {t.name for t in gguf.GGUFReader(adapter).tensors}
    assert not any("ffn_gate_inp" in name for name in names)  # the router stays frozen
    with torch.no_grad():
        twin = peft_model(input_ids=probe).logits[0].numpy()
    llama_base = llama_cpp_logits(converted.gguf, probe[0].tolist(), None)
    llama_twin = llama_cpp_logits(converted.gguf, probe[0].tolist(), adapter)
    torch_change, llama_change = twin - base, llama_twin - llama_base
    assert np.abs(torch_change).mean() > 0.05
    assert np.corrcoef(torch_change.ravel(), llama_change.ravel())[0, 1] > 0.999
    assert np.abs(llama_change).mean() == pytest.approx(np.abs(torch_change).mean(), rel=0.02)


def test_moe_expert_choices_decide_what_the_twin_adapts(small_tokenizer, tmp_path):
    from quantize.twin.trainer import add_lora
    from quantize.twin.training_config import TrainingConfig

    folder, _ = tiny_folder("qwen2moe", small_tokenizer, tmp_path)
    adapted = {}
    for choice in ("off", "shared", "all"):
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(folder)
        config = TrainingConfig(rank=4, alpha=8, train_layers=2, max_steps=1, moe_experts=choice)
        peft_model, _ = add_lora(model, config)
        adapted[choice] = sorted(
            {name.split(".lora_")[0] for name, p in peft_model.named_parameters() if p.requires_grad}
        )
    assert all("shared_expert." not in name and "experts" not in name for name in adapted["off"])
    assert any("shared_expert.down_proj" in name for name in adapted["shared"])
    assert not any("mlp.experts" in name for name in adapted["shared"])
    assert any("mlp.experts" in name for name in adapted["all"])
    for names in adapted.values():
        assert not any(name.endswith("mlp.gate") or "shared_expert_gate" in name for name in names)


def test_bad_models_get_one_clear_line_and_leave_nothing(converted_moe_folder, family_home, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    folder = converted_moe_folder

    too_many = tmp_path / "too-many-experts"
    _copy_folder(folder, too_many, num_experts_per_tok=8)
    disagree = tmp_path / "config-says-three-layers"
    _copy_folder(folder, disagree, num_hidden_layers=3)
    vision = tmp_path / "gemma3-vision"
    vision.mkdir()
    (vision / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    mamba = tmp_path / "mamba.gguf"
    write_one_tensor_gguf(mamba, "mamba")
    moe_gguf = out_dir.parent / "moe.gguf"
    assert lantern(family_home, "convert", str(folder), "--type", "F32", "-o", str(moe_gguf)).returncode == 0
    bad_gguf = tmp_path / "eight-of-four.gguf"
    _rewrite_gguf(moe_gguf, bad_gguf, {"qwen3moe.expert_used_count": 8})

    cases = [
        (too_many, "asks for 8 experts per token but has 4"),
        (bad_gguf, "asks for 8 experts per token but has 4"),
        (disagree, "config and weights disagree"),
        (vision, "Gemma 3 vision model"),
        (mamba, "'mamba' model; the conversion pipeline handles llama"),
    ]
    for source, message in cases:
        commands = [["convert", str(source)]]
        if source.suffix == ".gguf":
            commands.append(["quantize", str(source), "--type", "Q8_0"])
        for command in commands:
            result = lantern(family_home, *command, "-o", str(out_dir / "x.gguf"))
            assert result.returncode != 0, command
            assert message in result.stderr, (command, result.stderr)
            assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.stderr
    assert list(out_dir.iterdir()) == []


@pytest.fixture(scope="module")
def converted_moe_folder(small_tokenizer, tmp_path_factory) -> Path:
    return tiny_folder("qwen3moe", small_tokenizer, tmp_path_factory.mktemp("moe-folder"))[0]


def _copy_folder(source: Path, target: Path, **config_changes) -> None:
    target.mkdir()
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    config = json.loads((source / "config.json").read_text())
    config.update(config_changes)
    (target / "config.json").write_text(json.dumps(config))


def _rewrite_gguf(source: Path, target: Path, changes: dict) -> None:
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target, reader.get_field("general.architecture").contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, changes.get(key, field.contents()), value_type, sub_type)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.array(tensor.data))  # F32, as convert wrote it
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_preference_tuning_moves_every_expert_of_an_moe_twin(converted_moe_folder, tmp_path):
    import torch

    from quantize.gguf_export import export_gguf
    from quantize.sources import resolve_source
    from quantize.torch_bridge import load_torch_model
    from quantize.twin.adapter_export import export_lora_gguf
    from quantize.twin.dpo import DpoSettings, tune_preferences
    from quantize.twin.preferences import DpoPair
    from quantize.twin.trainer import add_lora
    from quantize.twin.training_config import TrainingConfig

    torch_model = load_torch_model(resolve_source(str(converted_moe_folder), None))
    base = tmp_path / "moe.gguf"
    export_gguf(torch_model, base, "F32")
    config = TrainingConfig(rank=4, alpha=8, train_layers=2, max_steps=1, moe_experts="all")
    peft_model, _ = add_lora(torch_model.model, config)
    before = {name: p.detach().clone() for name, p in peft_model.named_parameters() if p.requires_grad}
    pairs = [
        DpoPair([{"role": "user", "content": "What is a class?"}], "A template for objects.", "No idea."),
        DpoPair([{"role": "user", "content": "What does while do?"}], "It repeats a block.", "Nothing."),
    ]
    report = tune_preferences(peft_model, torch_model.tokenizer, pairs, DpoSettings(steps=2, max_length=256))
    assert report.steps == 2
    moved = {
        name
        for name, p in peft_model.named_parameters()
        if name in before and not torch.equal(p, before[name])
    }
    assert any("mlp.experts" in name for name in moved) and any("self_attn" in name for name in moved)
    assert not any("mlp.gate." in name for name in moved)  # the router stays frozen
    adapter = tmp_path / "tuned.gguf"
    export_lora_gguf(peft_model, adapter, "tuned")
    with_adapter = llama_cpp_logits(base, [5, 6, 7, 8], adapter)
    assert np.isfinite(with_adapter).all()
