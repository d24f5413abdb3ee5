"""The chat runtime: one engine owns one loaded llama.cpp model and streams answers from it.

The engine keeps the model's KV cache between calls. A new prompt that starts with the tokens
already in the cache (the usual case in a multi-turn chat) only evaluates the new suffix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from pathlib import Path

import llama_cpp

from app.chat_engine import DEFAULT_SETTINGS, ChatResult, ChatStream, drain
from app.chat_template import ChatMessage, ChatTemplate, fallback_template, validate_messages
from app.context_budget import PromptPlan, fit_to_context
from app.decoding import AnswerText, BatchWriter, GenerationSettings, make_sampler, verify_draft
from app.engine_text import StopMatcher, TokenPieces
from app.errors import LanternError
from app.kv_states import StateCache, keep_shared_cells
from app.llama_log import quiet_llama_cpp
from app.prompt_lookup import MAX_DRAFT, TokenHistory
from quantize.cores import usable_cores

__all__ = ["ChatResult", "ChatStream", "Engine", "GenerationSettings"]  # the first two: app/chat_engine.py


class _CellsLost(LanternError):
    """A decode failed and the KV cells were cleared."""


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
        self.threads = threads or usable_cores()
        self.llm = self._load(context_length, batch_size)
        trained = self.llm._model.n_ctx_train()
        if 0 < trained < context_length:
            # Past its trained length a model degrades; give it the window it was trained for.
            self.llm.close()
            self.llm = self._load(trained, batch_size)
        self.context_length = self.llm.n_ctx()
        self.template = self._load_template()
        self._pieces = TokenPieces(self.llm._model.vocab)
        self._lock = threading.Lock()
        self._memory = llama_cpp.llama_get_memory(self.llm.ctx)
        self._held = TokenHistory()  # the tokens the KV cells hold, in order
        self._writer = BatchWriter(self.llm.n_batch)
        self.state_cache: StateCache | None = None  # set by the owner to resume chats across processes

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
                # With flash attention llama.cpp computes a token's logits the same whether it runs
                # alone or in a batch (without it, a batch of drafts changes the sums), so checking
                # drafts gives the plain answer; the KV length still matters slightly (README).
                # But with it a LoRA adapter's effect is lost (measured: a twin answered as its
                # base), so a twin runs without.
                flash_attn=self.lora_path is None,
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
        with self._lock:
            self.llm.reset()
            llama_cpp.llama_memory_clear(self._memory, True)
            self._held = TokenHistory()

    def close(self) -> None:
        """Free the model; with a state cache that spills to disk, the chat in the KV cells is
        saved first, so ``lantern ask -c`` in the next process resumes it warm."""
        with self._lock:
            cache = self.state_cache
            if cache is not None and cache.spill_dir is not None:
                cache.save(self.llm.ctx, 0, self._held.view())
                cache.flush()
            self._writer.free()
            self.llm.close()

    def stream_chat(
        self, messages: list[ChatMessage], settings: GenerationSettings = DEFAULT_SETTINGS
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
        self, messages: list[ChatMessage], settings: GenerationSettings = DEFAULT_SETTINGS
    ) -> ChatResult:
        return drain(self.stream_chat(messages, settings))

    def _generate(
        self, stream: ChatStream, settings: GenerationSettings, started: float
    ) -> Generator[str, None, None]:
        with self._lock:
            plan = stream.plan
            tokens = plan.tokens
            reused = self._reuse_cells(tokens)
            known = TokenHistory(tokens)
            position = reused  # tokens of ``known`` in the KV cells
            sampler = make_sampler(settings, self.llm._model.vocab)
            answer = AnswerText(
                self._pieces,
                self.llm._model.vocab,
                StopMatcher(settings.stop + self.template.stops),
                plan.max_new_tokens,
            )
            speculate = settings.speculative == "prompt-lookup"
            drafted = accepted = 0
            first_token_at = None
            finish_reason = "cancelled"
            try:
                row = -1
                while position < len(tokens):  # the prompt, in batches
                    row = self._decode(tokens[position : position + self._writer.capacity], position)
                    position = min(len(tokens), position + self._writer.capacity)
                draft: list[int] = []
                while not stream.cancelled:
                    sampled = verify_draft(sampler, self.llm.ctx, row, draft)
                    if draft:
                        kept = position + len(sampled) - 1
                        if len(sampled) <= len(draft):  # drop the rejected drafts' cells
                            llama_cpp.llama_memory_seq_rm(self._memory, 0, kept, -1)
                        drafted, accepted = drafted + len(draft), accepted + len(sampled) - 1
                        position = kept
                    first_token_at = first_token_at or time.perf_counter()
                    for token in sampled:
                        known.append(token)
                        text = answer.take(token)
                        if text:
                            yield text
                        if answer.finish_reason is not None:
                            break
                    if answer.finish_reason is not None:
                        finish_reason = answer.finish_reason
                        break
                    room = min(MAX_DRAFT, plan.max_new_tokens - answer.completion_tokens - 1)
                    room = min(room, self.context_length - position - 2, self._writer.capacity - 1)
                    draft = known.draft(room) if speculate and room > 0 else []
                    row = self._decode([int(known.view()[-1]), *draft], position, all_logits=True)
                    position += 1
                if finish_reason != "cancelled":
                    tail = answer.tail()  # text held back as a possible stop sequence that never was one
                    if tail:
                        yield tail
            except _CellsLost:
                known, position = TokenHistory(), 0
                raise
            finally:
                llama_cpp.llama_sampler_free(sampler)
                self._keep_cells(known, position)
                ended = time.perf_counter()
                stream.result = ChatResult(
                    text=answer.text,
                    finish_reason=finish_reason,
                    prompt_tokens=len(tokens),
                    prompt_tokens_evaluated=len(tokens) - reused,
                    completion_tokens=answer.completion_tokens,
                    dropped_messages=plan.dropped_messages,
                    time_to_first_token_s=(first_token_at or ended) - started,
                    total_s=ended - started,
                    draft_tokens=drafted,
                    accepted_draft_tokens=accepted,
                )

    def _decode(self, tokens: list[int], position: int, all_logits: bool = False) -> int:
        """Run ``tokens`` from ``position`` on; returns the batch row of the first token whose
        logits were asked for (all of them, or the last)."""
        writer = self._writer
        writer.clear()
        for k, token in enumerate(tokens):
            writer.add(token, position + k, 0, all_logits or k == len(tokens) - 1)
        status = llama_cpp.llama_decode(self.llm.ctx, writer.batch)
        if status != 0:
            llama_cpp.llama_memory_clear(self._memory, True)
            raise _CellsLost(f"llama.cpp could not evaluate the prompt (llama_decode returned {status})")
        return 0 if all_logits else len(tokens) - 1

    def _reuse_cells(self, tokens: list[int]) -> int:
        """Keep the KV cells that already hold a prefix of ``tokens`` (or restore a saved state
        that holds a longer one) and drop the rest; returns how many prompt tokens are reused."""
        self._held, shared = keep_shared_cells(
            self.llm.ctx, 0, self._held, tokens, self.state_cache, self.reuse_prefix
        )
        self.llm.n_tokens = 0  # llama-cpp-python's own bookkeeping no longer describes the cells
        return shared

    def _keep_cells(self, known: TokenHistory, position: int) -> None:
        """After an answer: remember exactly what the cells hold, for the next prompt."""
        held = min(position, len(known))
        if position > held:  # drafts accepted past the end of the answer
            llama_cpp.llama_memory_seq_rm(self._memory, 0, held, -1)
        known.truncate(held)
        self._held = known
