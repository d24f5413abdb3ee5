"""The model's own chat template renders conversations exactly as llama.cpp's tooling expects."""

from __future__ import annotations

import gguf
import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from app.chat_template import CHATML_TEMPLATE, ChatMessage, ChatTemplate
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


def test_a_hostile_template_cannot_reach_python_internals():
    hostile = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(LanternError, match="chat template failed"):
        hostile.render([ChatMessage("user", "hi")])


def test_a_template_that_raises_gives_a_clear_error():
    strict = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(LanternError, match="roles must alternate"):
        strict.render([ChatMessage("user", "hi")])
