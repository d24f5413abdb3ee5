"""The model store: the bundled default, adding, inspecting and removing models, and refusals."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.conftest import run_lantern
from tests.gguf_fixtures import write_tiny_qwen3moe


def _snapshot(home):
    """Everything the store holds, to prove a refused command changed nothing."""
    registry = (home / "models.json").read_bytes()
    files = sorted(p.name for p in (home / "models").iterdir())
    return registry, files


def test_first_run_registers_the_bundled_model_without_copying_it(home, bundled_model):
    listing = run_lantern("models", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    models = json.loads(listing.stdout)
    assert [m["name"] for m in models] == ["smollm2-135m-instruct", "gemma3-270m"]
    assert models[0]["default"] and models[0]["bundled"] and models[0]["ready"]
    assert models[0]["path"] == str(bundled_model)
    # Gemma is on offer, to be assembled from its package the first time it is used.
    assert not models[1]["ready"] and not models[1]["default"] and models[1]["path"] is None
    assert list((home / "models").iterdir()) == []  # nothing copied, nothing assembled
    text = run_lantern("models", "list").stdout.decode()
    assert "gemma3-270m" in text and "assembled on first use" in text


def test_data_home_is_private(home):
    run_lantern("models", "list")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for path in home.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_info_describes_the_bundled_model(home):
    info = run_lantern("models", "info", "smollm2-135m-instruct", "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["architecture"] == "llama"
    assert data["quantization"] == "Q4_1"
    assert data["context_length"] == 8192
    assert 130e6 < data["parameter_count"] < 140e6
    assert data["file_size"] == os.path.getsize(data["path"])
    assert data["chat_template_source"].startswith("model")

    text = run_lantern("models", "info", "smollm2-135m-instruct").stdout.decode()
    for label in (
        "architecture:",
        "parameters:",
        "quantization:",
        "context length:",
        "file size:",
        "chat template:",
    ):
        assert label in text


def test_added_model_is_copied_in_then_removed_by_rm(home, bundled_model, tmp_path):
    source = tmp_path / "My Model.Q4_1.gguf"
    source.write_bytes(bundled_model.read_bytes())
    added = run_lantern("models", "add", str(source))
    assert added.returncode == 0, added.stderr
    assert b"my-model.q4_1" in added.stdout
    stored = home / "models" / "my-model.q4_1.gguf"
    assert stored.read_bytes() == source.read_bytes()
    source.unlink()  # the store owns its copy: the original may go
    answer = run_lantern("ask", "Say hello.", "--model", "my-model.q4_1", "--max-tokens", "4")
    assert answer.returncode == 0, answer.stderr

    duplicate = run_lantern("models", "add", str(stored), "--name", "my-model.q4_1")
    assert duplicate.returncode != 0 and b"already exists" in duplicate.stderr

    removed = run_lantern("models", "rm", "my-model.q4_1")
    assert removed.returncode == 0
    assert not stored.exists()
    names = [m["name"] for m in json.loads(run_lantern("models", "list", "--json").stdout)]
    assert names == ["smollm2-135m-instruct", "gemma3-270m"]


def test_removing_the_bundled_model_never_deletes_the_package_file(home, bundled_model):
    assert run_lantern("models", "rm", "smollm2-135m-instruct").returncode == 0
    assert bundled_model.is_file()
    left = json.loads(run_lantern("models", "list", "--json").stdout)
    assert [(m["name"], m["ready"]) for m in left] == [("gemma3-270m", False)]
    # A removed default stays removed; asking names the problem and the fix.
    ask = run_lantern("ask", "hi")
    assert ask.returncode != 0
    assert b"no model named 'smollm2-135m-instruct'" in ask.stderr


def test_a_model_written_elsewhere_with_o_is_kept_on_disk_by_rm(home, tmp_path):
    out = tmp_path / "mine.q8_0.gguf"
    written = run_lantern("quantize", "smollm2-135m-instruct", "--type", "Q8_0", "-o", str(out))
    assert written.returncode == 0, written.stderr
    listed = {m["name"]: m for m in json.loads(run_lantern("models", "list", "--json").stdout)}
    assert listed["mine.q8_0"]["path"] == str(out.resolve())  # registered where it was written, not copied in
    assert list((home / "models").iterdir()) == []
    content = out.read_bytes()

    removed = run_lantern("models", "rm", "mine.q8_0")
    assert removed.returncode == 0, removed.stderr
    assert out.read_bytes() == content  # the file is the user's: only the registration goes
    names = [m["name"] for m in json.loads(run_lantern("models", "list", "--json").stdout)]
    assert names == ["smollm2-135m-instruct", "gemma3-270m"]


def _bad_files(tmp_path, bundled_model):
    data = bundled_model.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "truncated-in-header": data[:4096],
        "wrong-magic": b"GGML" + data[4:],
        "empty": b"",
    }
    paths = {}
    for name, content in cases.items():
        paths[name] = tmp_path / f"{name}.gguf"
        paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize(
    "case, reason",
    [
        ("truncated", b"truncated"),
        ("truncated-in-header", b"truncated"),
        ("wrong-magic", b"not a GGUF file"),
        ("empty", b"empty file"),
    ],
)
def test_a_broken_gguf_is_refused_with_one_line_and_the_store_is_unchanged(
    home, bundled_model, tmp_path, case, reason
):
    run_lantern("models", "list")
    before = _snapshot(home)
    path = _bad_files(tmp_path, bundled_model)[case]
    result = run_lantern("models", "add", str(path))
    assert result.returncode != 0
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert reason.decode() in err
    assert "Traceback" not in err
    assert _snapshot(home) == before


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "x" * 65, "a\\b", "a..b"])
def test_model_names_that_could_escape_the_store_are_refused(home, bundled_model, name):
    run_lantern("models", "list")
    before = _snapshot(home)
    result = run_lantern("models", "add", str(bundled_model), "--name", name)
    assert result.returncode != 0
    assert b"invalid model name" in result.stderr
    assert _snapshot(home) == before
    for command in (("info", name), ("rm", name)):
        refused = run_lantern("models", *command)
        assert refused.returncode != 0 and b"invalid model name" in refused.stderr


def test_a_missing_file_is_a_clear_error(home, tmp_path):
    result = run_lantern("models", "add", str(tmp_path / "nope.gguf"))
    assert result.returncode != 0
    assert b"does not exist" in result.stderr


def test_info_and_list_say_what_the_bundled_model_costs_to_run(home):
    data = json.loads(run_lantern("models", "info", "smollm2-135m-instruct", "--json").stdout)
    assert data["moe"] is False and data["expert_count"] is None
    assert data["active_parameter_count"] == data["parameter_count"]  # dense: every weight, every token
    # SmolLM2-135M: 30 layers, 3 KV heads of 576 / 9 = 64 dims; the default config opens 4096 tokens.
    assert (data["block_count"], data["kv_head_count"], data["key_length"]) == (30, 3, 64)
    assert data["ram_estimate_context_length"] == 4096
    assert data["kv_cache_bytes"] == 2 * 30 * 4096 * 3 * 64 * 2  # K and V, F16
    assert data["ram_estimate_bytes"] == data["file_size"] + data["kv_cache_bytes"]
    assert "upper bound" in data["ram_estimate_note"]

    text = run_lantern("models", "info", "smollm2-135m-instruct").stdout.decode()
    assert "active per token:  all (a dense model)" in text
    assert "RAM estimate:" in text and "upper bound" in text

    listed = json.loads(run_lantern("models", "list", "--json").stdout)[0]
    assert listed["ram_estimate_bytes"] == data["ram_estimate_bytes"] and listed["moe"] is False
    line = run_lantern("models", "list").stdout.decode()
    assert "llama" in line and "135M" in line and "RAM" in line and "MoE" not in line


def test_a_mixture_of_experts_model_shows_its_experts_and_active_parameters(home, tmp_path):
    path = tmp_path / "tiny-moe.gguf"
    write_tiny_qwen3moe(path)
    assert run_lantern("models", "add", str(path)).returncode == 0

    experts = 2 * 3 * 8 * 12 * 16  # 2 layers x gate/up/down x 8 experts x 12 x 16
    per_layer = 16 + 32 * 16 + 16 * 16 + 16 * 16 + 16 * 32 + 8 + 8 + 16 + 8 * 16
    total = 32 * 16 + 16 + 32 * 16 + 2 * per_layer + experts
    active = total - experts * 6 // 8  # the router leaves 6 of 8 experts idle for each token
    assert (experts, total, active) == (9216, 13680, 6768)

    info = json.loads(run_lantern("models", "info", "tiny-moe", "--json").stdout)
    assert info["architecture"] == "qwen3moe" and info["moe"] is True
    assert (info["expert_count"], info["expert_used_count"]) == (8, 2)
    assert info["parameter_count"] == total and info["active_parameter_count"] == active
    assert info["expert_parameter_count"] == experts
    assert info["expert_share"] == round(experts / total, 6)
    # The config asks for 4096 tokens; the model was trained for 256, as the engine would open it.
    assert info["ram_estimate_context_length"] == 256
    assert info["kv_cache_bytes"] == 2 * 2 * 256 * 2 * 8 * 2  # K+V x layers x ctx x kv heads x dim x F16
    assert info["ram_estimate_bytes"] == path.stat().st_size + info["kv_cache_bytes"]

    text = run_lantern("models", "info", "tiny-moe").stdout.decode()
    assert "active per token:  6.8K (6,768)" in text
    assert "2 of 8 per token; experts hold 67.4% of the parameters" in text

    listed = {m["name"]: m for m in json.loads(run_lantern("models", "list", "--json").stdout)}
    moe = listed["tiny-moe"]
    assert (moe["moe"], moe["expert_count"], moe["expert_used_count"]) == (True, 8, 2)
    assert moe["active_parameter_count"] == active and moe["size"] == path.stat().st_size
    assert listed["smollm2-135m-instruct"]["moe"] is False
    lines = run_lantern("models", "list").stdout.decode().splitlines()
    (moe_line,) = [line for line in lines if "tiny-moe" in line]
    assert "qwen3moe" in moe_line and "MoE 2/8 experts" in moe_line and "6.8K act." in moe_line


def test_a_registry_from_an_older_lantern_gets_its_facts_on_first_info(home, bundled_model):
    assert run_lantern("models", "add", str(bundled_model), "--name", "old").returncode == 0
    registry = home / "models.json"
    data = json.loads(registry.read_text())
    del data["models"]["old"]["facts"]  # as Lantern wrote it before it knew about facts
    registry.write_text(json.dumps(data))
    info = run_lantern("models", "info", "old", "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["kv_cache_bytes"] > 0
    assert "facts" in json.loads(registry.read_text())["models"]["old"]  # cached for next time


def test_model_accepts_a_gguf_path_as_llama_cpp_users_type_it(home, bundled_model):
    answer = run_lantern("ask", "Say hello.", "--model", str(bundled_model), "--max-tokens", "4", "--json")
    assert answer.returncode == 0, answer.stderr
    data = json.loads(answer.stdout)
    assert data["text"] and data["model"] == str(bundled_model)
    # The file is used where it lies: nothing is added to the store.
    ready = [m["name"] for m in json.loads(run_lantern("models", "list", "--json").stdout) if m["ready"]]
    assert ready == ["smollm2-135m-instruct"]


@pytest.mark.parametrize("command", ["ask", "chat"])
def test_model_given_a_broken_gguf_path_is_refused_with_one_line(home, bundled_model, tmp_path, command):
    path = _bad_files(tmp_path, bundled_model)["truncated"]
    args = ["ask", "hi"] if command == "ask" else ["chat"]
    result = run_lantern(*args, "--model", str(path), input=b"hi\n")
    assert result.returncode != 0
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1, err
    assert f"{path} is truncated" in err
    assert "Traceback" not in err
