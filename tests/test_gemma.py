"""The second real model, Gemma 3 270M, through the whole pipeline as a user runs it: converted to
F16 with its logits checked against llama.cpp, quantized with an importance matrix from notes and
compared, chatted with, and made into a twin that llama.cpp runs with its adapter (about two
minutes on two cores).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from tests.conftest import lantern_at as lantern

GPL = Path("/usr/share/common-licenses/GPL-3")


@pytest.fixture(scope="module")
def gemma_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gemma-pipeline-home")


@pytest.fixture(scope="module")
def notes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gemma-notes")
    for topic in ("class", "while", "for", "try", "with", "assert", "if", "import", "lambda", "global"):
        (folder / f"{topic}.md").write_text(f"# {topic}\n\n{topics[topic]}", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def gemma_f16(gemma_home) -> str:
    result = lantern(gemma_home, "convert", "gemma3-270m", "--verify", timeout=1200)
    assert result.returncode == 0, result.stderr
    written = re.search(r"on the written file: top-1 agreement ([\d.]+)% over (\d+) positions", result.stderr)
    # F16 weights in llama.cpp against the F32 torch model: rounding moves few picks.
    assert written and float(written[1]) >= 97.0 and int(written[2]) == 256, result.stderr
    assert "Converting" not in result.stderr  # transformers' progress bar stays off the terminal
    # The source's tokenizer and the same one kept for the written file: `quantize` will not rebuild it.
    assert len(list((gemma_home / "cache" / "tokenizers").iterdir())) == 2
    return "gemma3-270m-f16"


def test_gemma_converts_quantizes_and_answers(gemma_home, gemma_f16, notes, tmp_path):
    # Two of the notes are plenty for an importance matrix (each token of them is a forward pass).
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for note in ("assert.md", "if.md"):
        (calibration / note).write_text((notes / note).read_text(encoding="utf-8"), encoding="utf-8")
    quantized = lantern(
        gemma_home, "quantize", gemma_f16, "--type", "Q8_0", "--imatrix-from", str(calibration), timeout=1200
    )
    assert quantized.returncode == 0, quantized.stderr
    assert "importance matrix from" in quantized.stdout
    answer = lantern(
        gemma_home, "ask", "--model", f"{gemma_f16}-q8_0", "The capital of France is", "--max-tokens", "8"
    )
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr
    compared = lantern(
        gemma_home, "eval", "compare", gemma_f16, f"{gemma_f16}-q8_0", "--text", str(GPL),
        "--window", "128", "--stride", "64", "--max-tokens", "256", "--json", timeout=1200,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    report = json.loads(compared.stdout)
    assert report["kl_divergence"] < 0.05 and report["top1_agreement"] > 0.9, report
    info = json.loads(lantern(gemma_home, "models", "info", f"{gemma_f16}-q8_0", "--json").stdout)
    assert info["architecture"] == "gemma3" and info["quantization"] == "Q8_0"


def test_a_gemma_twin_trains_and_runs_in_llama_cpp(gemma_home, notes):
    built = lantern(
        gemma_home, "twin", "build", str(notes), "--base", "gemma3-270m", "--name", "gemma-twin",
        "--steps", "4", "--seq-len", "128", "--rank", "8", "--lr", "3e-3", timeout=1800,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "top 15 of 18 layers" in built.stderr  # all but the lowest sixth
    evaluated = lantern(
        gemma_home, "twin", "eval", "gemma-twin", "--max-tokens", "512", "--json", timeout=1200
    )
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["twin_ppl"] < report["base_ppl"], report  # four steps already lower it by about a third
    answer = lantern(
        gemma_home, "ask", "--twin", "gemma-twin", "What does the assert statement do?", "--max-tokens", "16"
    )
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr
