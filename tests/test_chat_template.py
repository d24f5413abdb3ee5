"""The model's own chat template renders conversations exactly as llama.cpp's tooling expects."""

from __future__ import annotations

import gguf
import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from app.chat_template import CHATML_TEMPLATE, ChatMessage, ChatTemplate, fallback_template
from app.engine import Engine
from app.errors import LanternError

CONVERSATION = [
    ChatMessage("system", "You are terse."),
    ChatMessage("user", "Name a colour."),
    ChatMessage("assistant", "Blue."),
    ChatMessage("user", "Another, with ünïcödé ✓."),
]


@pytest.fixture(scope="module")
def real_template(bundled_model) -> str:
    field = gguf.GGUFReader(bundled_model).get_field(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    return field.contents()


def test_the_engine_uses_the_template_stored_in_the_model(engine, real_template):
    assert engine.template.source == real_template


def test_rendering_matches_the_chatml_layout_of_smollm2(real_template):
    text = ChatTemplate(real_template).render(CONVERSATION)
    assert text == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\nBlue.<|im_end|>\n"
        "<|im_start|>user\nAnother, with ünïcödé ✓.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_rendering_agrees_with_llama_cpp_pythons_own_formatter(engine, real_template):
    theirs = Jinja2ChatFormatter(
        real_template, eos_token=engine.template.eos_token, bos_token=engine.template.bos_token
    )(messages=[{"role": m.role, "content": m.content} for m in CONVERSATION]).prompt
    assert engine.template.render(CONVERSATION) == theirs


def test_the_template_supplies_its_default_system_prompt_when_none_is_given(real_template):
    text = ChatTemplate(real_template).render([ChatMessage("user", "hi")])
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_special_tokens_in_the_prompt_become_single_tokens(engine):
    tokens = engine.tokenize_chat([ChatMessage("user", "hi")])
    im_start = engine.llm.tokenize(b"<|im_start|>", add_bos=False, special=True)
    assert len(im_start) == 1 and tokens[0] == im_start[0]


def test_a_model_without_a_template_falls_back_to_chatml():
    text = ChatTemplate(CHATML_TEMPLATE).render([ChatMessage("user", "hi")])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_a_gemma_model_without_a_template_gets_gemma_turns_with_the_system_prompt_in_the_first():
    gemma = fallback_template("gemma3")
    text = ChatTemplate(gemma.source, bos_token="<bos>").render(CONVERSATION)
    assert text == (
        "<bos><start_of_turn>user\nYou are terse.\n\nName a colour.<end_of_turn>\n"
        "<start_of_turn>model\nBlue.<end_of_turn>\n"
        "<start_of_turn>user\nAnother, with ünïcödé ✓.<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert gemma.stops == ("<end_of_turn>",)


def test_the_fallback_is_chosen_by_architecture_or_by_gemmas_turn_tokens():
    assert fallback_template("llama").source == CHATML_TEMPLATE
    assert fallback_template("gemma2") == fallback_template("gemma3")
    assert fallback_template("llama", has_gemma_turn_tokens=True) == fallback_template("gemma3")


def test_the_real_gemma_model_is_prompted_in_its_own_turns_and_stops_at_end_of_turn(gemma_model):
    gemma = Engine(gemma_model, context_length=512)
    try:
        assert gemma.template.source == fallback_template("gemma3").source
        assert "<end_of_turn>" in gemma.template.stops
        tokens = gemma.tokenize_chat([ChatMessage("system", "Be brief."), ChatMessage("user", "hi")])
        start_of_turn = gemma.llm.tokenize(b"<start_of_turn>", add_bos=False, special=True)
        assert len(start_of_turn) == 1
        assert tokens[:2] == [gemma.llm.token_bos(), start_of_turn[0]]  # one BOS, then a turn
    finally:
        gemma.llm.close()


def test_a_hostile_template_cannot_reach_python_internals():
    hostile = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(LanternError, match="chat template failed"):
        hostile.render([ChatMessage("user", "hi")])


def test_a_template_that_raises_gives_a_clear_error():
    strict = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(LanternError, match="roles must alternate"):
        strict.render([ChatMessage("user", "hi")])
