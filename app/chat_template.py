"""Render a conversation with the model's own chat template, in a sandboxed Jinja environment.

A GGUF's template is code from whoever made the file, so it runs in Jinja's immutable sandbox:
it can format strings but cannot reach Python objects, files or the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.errors import LanternError

# Used when a model ships no template; ChatML is what most small instruct models expect.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma's turns: only "user" and "model"; the system prompt goes at the top of the first user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% set ns.system = message['content'] + '\n\n' %}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<start_of_turn>user\n' + ns.system + message['content'] + '<end_of_turn>\n' }}"
    "{% set ns.system = '' %}"
    "{% else %}"
    "{{ '<start_of_turn>model\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@dataclass(frozen=True)
class FallbackTemplate:
    """The turn format used for a model whose GGUF carries no chat template."""

    name: str  # shown by `lantern models info`
    source: str
    stops: tuple[str, ...] = ()  # text that ends an answer, should the model spell it out


CHATML = FallbackTemplate("ChatML", CHATML_TEMPLATE)
GEMMA = FallbackTemplate("Gemma turns", GEMMA_TEMPLATE, stops=("<end_of_turn>",))


def fallback_template(architecture: str, has_gemma_turn_tokens: bool = False) -> FallbackTemplate:
    """Gemma's format for a Gemma architecture or a vocabulary with ``<start_of_turn>``, else ChatML."""
    if architecture.startswith("gemma") or has_gemma_turn_tokens:
        return GEMMA
    return CHATML


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system", "user" or "assistant"
    content: str


ROLES = ("system", "user", "assistant")


def check_utf8(text: str, what: str) -> str:
    """Refuse text that cannot be encoded as UTF-8 (undecodable bytes from argv or a pipe)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LanternError(
            f"the {what} is not valid UTF-8 (bad byte at position {exc.start}); "
            "convert it to UTF-8 and try again"
        ) from None
    return text


def validate_messages(messages: list[ChatMessage]) -> None:
    for message in messages:
        if message.role not in ROLES:
            raise LanternError(f"unknown message role {message.role!r}; use one of {ROLES}")
        check_utf8(message.content, f"{message.role} message")


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


@lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    bos_token: str = ""
    eos_token: str = ""
    stops: tuple[str, ...] = ()  # stop sequences the format implies, added to the caller's

    def render(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages``, ending where the assistant's answer begins."""
        try:
            template = _compile(self.source)
            return template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except jinja2.TemplateError as exc:
            raise LanternError(f"the model's chat template failed: {exc}") from None
