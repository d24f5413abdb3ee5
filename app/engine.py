"""The chat runtime: one engine owns one loaded llama.cpp model and streams answers from it.

The engine keeps the model's KV cache between calls. A new prompt that starts with the tokens
already in the cache (the usual case in a multi-turn chat) only evaluates the new suffix.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import secrets
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np

from app.chat_template import ChatMessage, ChatTemplate, fallback_template, validate_messages
from app.context_budget import PromptPlan, fit_to_context
from app.errors import LanternError
from app.llama_log import quiet_llama_cpp


@dataclass(frozen=True)
class GenerationSettings:
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None  # None: a fresh random seed for every answer
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: str  # "stop": the model or a stop sequence ended it; "length": out of tokens
    prompt_tokens: int
    prompt_tokens_evaluated: int  # prompt tokens not served from the KV cache
    completion_tokens: int
    dropped_messages: int  # old messages trimmed to fit the context window
    time_to_first_token_s: float
    total_s: float

    @property
    def decode_tokens_per_s(self) -> float:
        decode_s = self.total_s - self.time_to_first_token_s
        if self.completion_tokens < 2 or decode_s <= 0:
            return 0.0
        return (self.completion_tokens - 1) / decode_s


def _common_prefix_length(cached: np.ndarray, tokens: list[int]) -> int:
    n = min(len(cached), len(tokens))
    if n == 0:
        return 0
    differs = np.flatnonzero(cached[:n] != np.asarray(tokens[:n], dtype=cached.dtype))
    return int(differs[0]) if differs.size else n


class _TokenPieces:
    """Token id -> the bytes it stands for, memoised (decoding is on the streaming hot path)."""

    def __init__(self, vocab):
        self._vocab = vocab
        self._buffer = ctypes.create_string_buffer(64)
        self._cache: dict[int, bytes] = {}

    def __getitem__(self, token: int) -> bytes:
        piece = self._cache.get(token)
        if piece is None:
            piece = self._cache[token] = self._decode(token)
        return piece

    def _decode(self, token: int) -> bytes:
        size = len(self._buffer)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._buffer, size, 0, False)
        if n < 0:  # the buffer was too small; -n is the size needed
            self._buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._buffer, -n, 0, False)
        return self._buffer.raw[:n]


class _StopMatcher:
    """Finds stop sequences in streamed text, holding back what might be the start of one."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop sequence was hit)."""
        if not self.stops:
            return text, False
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class ChatStream:
    """An answer being generated: iterate for text pieces; ``result`` is set once it ends."""

    def __init__(self, plan: PromptPlan):
        self.plan = plan
        self.result: ChatResult | None = None
        self._pieces: Generator[str, None, None] | None = None
        self._cancelled = threading.Event()

    def __iter__(self) -> Iterator[str]:
        assert self._pieces is not None
        return self._pieces

    def cancel(self) -> None:
        """Ask the generation to stop after the current token; safe from any thread."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def close(self) -> None:
        """Stop generating (a reader went away); the engine stays usable."""
        if self._pieces is not None:
            self._pieces.close()


class Engine:
    """A loaded GGUF model that answers chats. One answer at a time; callers queue on a lock."""

    def __init__(
        self,
        model_path: Path,
        *,
        context_length: int = 4096,
        threads: int = 0,
        batch_size: int = 512,
        reuse_prefix: bool = True,
        lora_path: Path | None = None,
        lora_scale: float = 1.0,
    ):
        """``lora_path``: a llama.cpp LoRA adapter (a twin) applied on top of the model."""
        self.model_path = Path(model_path)
        self.lora_path = lora_path
        self.lora_scale = lora_scale
        self.reuse_prefix = reuse_prefix
        self.threads = threads or os.cpu_count() or 1
        self.llm = self._load(context_length, batch_size)
        trained = self.llm._model.n_ctx_train()
        if 0 < trained < context_length:
            # Past its trained length a model degrades; give it the window it was trained for.
            self.llm.close()
            self.llm = self._load(trained, batch_size)
        self.context_length = self.llm.n_ctx()
        self.template = self._load_template()
        self._pieces = _TokenPieces(self.llm._model.vocab)
        self._lock = threading.Lock()

    def _load(self, context_length: int, batch_size: int) -> llama_cpp.Llama:
        adapter = {}
        if self.lora_path is not None:
            adapter = {"lora_path": str(self.lora_path), "lora_scale": self.lora_scale}
        quiet_llama_cpp()
        try:
            return llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=context_length,
                n_batch=batch_size,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                # Memory-mapped: pages of a Mixture-of-Experts' experts that no token routes to are
                # never read, so they need not be resident (and the OS may drop them again).
                use_mmap=True,
                verbose=False,
                **adapter,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LanternError(f"llama.cpp could not load {self.model_path}: {exc}") from None

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def _is_one_token(self, text: str) -> bool:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) == 1

    def _load_template(self) -> ChatTemplate:
        bos = self._token_text(self.llm.token_bos())
        eos = self._token_text(self.llm.token_eos())
        source = self.llm.metadata.get("tokenizer.chat_template")
        if source:
            return ChatTemplate(source=source, bos_token=bos, eos_token=eos)
        fallback = fallback_template(
            self.llm.metadata.get("general.architecture", ""),
            has_gemma_turn_tokens=self._is_one_token("<start_of_turn>"),
        )
        return ChatTemplate(source=fallback.source, bos_token=bos, eos_token=eos, stops=fallback.stops)

    def tokenize_chat(self, messages: list[ChatMessage]) -> list[int]:
        """The prompt tokens for ``messages`` with the generation prompt appended."""
        text = self.template.render(messages)
        # A template that writes the BOS token itself must not get a second one.
        add_bos = not (self.template.bos_token and text.startswith(self.template.bos_token))
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8")))

    def plan(self, messages: list[ChatMessage], max_tokens: int) -> PromptPlan:
        return fit_to_context(messages, self.tokenize_chat, self.context_length, max_tokens)

    def forget_cache(self) -> None:
        """Drop the KV cache, so the next prompt is evaluated from scratch."""
        self.llm.reset()

    def stream_chat(
        self, messages: list[ChatMessage], settings: GenerationSettings = GenerationSettings()
    ) -> ChatStream:
        """Start answering the conversation; its last message must be the user's.

        Bad input and a prompt that cannot fit raise here, before any text is streamed.
        """
        started = time.perf_counter()
        validate_messages(messages)
        stream = ChatStream(self.plan(messages, settings.max_tokens))
        stream._pieces = self._generate(stream, settings, started)
        return stream

    def chat(
        self, messages: list[ChatMessage], settings: GenerationSettings = GenerationSettings()
    ) -> ChatResult:
        stream = self.stream_chat(messages, settings)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def _generate(
        self, stream: ChatStream, settings: GenerationSettings, started: float
    ) -> Generator[str, None, None]:
        with self._lock:
            plan = stream.plan
            tokens = plan.tokens
            llm = self.llm
            reuse = 0
            if self.reuse_prefix:
                reuse = _common_prefix_length(llm.input_ids[: llm.n_tokens], tokens)
                reuse = min(reuse, len(tokens) - 1)  # one token must run to produce logits
            llm.n_tokens = reuse  # eval() drops the KV cells past this point

            llm.set_seed(settings.seed if settings.seed is not None else secrets.randbits(31))
            vocab = llm._model.vocab
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            stops = _StopMatcher(settings.stop + self.template.stops)
            pieces: list[str] = []
            first_token_at = None
            finish_reason = "length"
            completion = 0
            generator = llm.generate(
                tokens[reuse:],
                temp=settings.temperature,
                top_p=settings.top_p,
                reset=False,
            )
            try:
                for token in generator:
                    if stream.cancelled:
                        finish_reason = "cancelled"
                        break
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        finish_reason = "stop"
                        break
                    completion += 1
                    text, hit_stop = stops.feed(decoder.decode(self._pieces[token]))
                    if text:
                        pieces.append(text)
                        yield text
                    if hit_stop:
                        finish_reason = "stop"
                        break
                    if completion >= plan.max_new_tokens:
                        break
                # Text held back as a possible stop sequence never became one: send it.
                tail = stops.flush() + decoder.decode(b"", final=True)
                if tail:
                    pieces.append(tail)
                    yield tail
            finally:
                generator.close()
                ended = time.perf_counter()
                stream.result = ChatResult(
                    text="".join(pieces),
                    finish_reason=finish_reason,
                    prompt_tokens=len(tokens),
                    prompt_tokens_evaluated=len(tokens) - reuse,
                    completion_tokens=completion,
                    dropped_messages=plan.dropped_messages,
                    time_to_first_token_s=(first_token_at or ended) - started,
                    total_s=ended - started,
                )
