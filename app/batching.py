"""Continuous batching: many answers decoded together as sequences of one llama.cpp batch.

One scheduler thread owns a llama.cpp context with ``slots`` KV sequences. Each step it puts the
next token of every answering sequence (and its drafted tokens, when speculating), and as many
prompt tokens of newly admitted requests as the step's time bound allows, into one
``llama_batch`` and calls ``llama_decode`` once, so four clients cost little more than one on a
memory-bound CPU. Requests wait their turn in a bounded FIFO queue (fair: first come, first
served); a consumer that goes away cancels its sequence, which frees the slot on the next step.

Every client resends the whole conversation each turn, so a sequence keeps its KV cells after
its answer: the next request goes to the free sequence that shares the longest token prefix
with it, and only the rest is evaluated. A sequence taken over by another conversation first
saves its state into a bounded cache, from which the conversation resumes when it returns.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import threading
import time
from dataclasses import dataclass, field

import llama_cpp

from app.chat_template import ChatMessage
from app.context_budget import PromptPlan, fit_to_context
from app.decoding import AnswerText, BatchWriter, GenerationSettings, make_sampler, verify_draft
from app.engine import ChatResult, Engine
from app.engine_text import StopMatcher
from app.errors import LanternError
from app.kv_states import StateCache, keep_shared_cells
from app.prompt_lookup import MAX_DRAFT, TokenHistory

DONE = object()  # put on a stream after its last piece
MIN_PREFILL_CHUNK = 2  # prompt tokens per step at least, however tight the time bound


class QueueFullError(LanternError):
    """Every slot is busy and the waiting line is full; the client should retry shortly."""


@dataclass
class BatchedStream:
    """One answer in the batch. Iterate with ``async for`` in the event loop that submitted it."""

    plan: PromptPlan
    settings: GenerationSettings
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    result: ChatResult | None = None
    submitted_at: float = field(default_factory=time.perf_counter)
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop this answer; its slot is freed on the scheduler's next step. Safe from any thread."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _emit(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the consumer's event loop has closed: nobody is listening any more
            self.cancel()

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        item = await self.queue.get()
        if item is DONE:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item


@dataclass(eq=False)
class _Sequence:
    """One KV sequence of the context and the tokens its cells hold (kept between answers)."""

    seq_id: int
    held: TokenHistory = field(default_factory=TokenHistory)
    last_used: float = 0.0


@dataclass(eq=False)
class _Slot:
    """An answer in progress on a sequence."""

    sequence: _Sequence
    stream: BatchedStream
    sampler: object
    answer: AnswerText
    known: TokenHistory  # prompt and answer tokens so far: the first ``position`` are in the KV cells
    position: int  # tokens of ``known`` already in the KV cells
    reused: int  # prompt tokens that were in the cells (or a saved state) before this answer
    speculate: bool
    first_row: int = -1  # batch row whose logits give this slot's next token, -1: none this step
    draft: list[int] = field(default_factory=list)
    drafted: int = 0
    accepted: int = 0
    first_token_at: float | None = None

    @property
    def prefilling(self) -> bool:
        return self.position < len(self.stream.plan.tokens)


@dataclass
class _StepCosts:
    """What a step costs, learnt from the steps so far: a step of next tokens only, and each
    prompt token on top. Used to bound the prompt tokens a step may carry while others stream."""

    decode_s: float | None = None
    prompt_token_s: float | None = None

    def learn(self, seconds: float, decode_rows: int, prompt_rows: int) -> None:
        if prompt_rows == 0 and decode_rows > 0:
            self.decode_s = _ema(self.decode_s, seconds)
        elif prompt_rows > 0 and (decode_rows == 0 or self.decode_s is not None):
            extra = seconds - self.decode_s if decode_rows else seconds
            self.prompt_token_s = _ema(self.prompt_token_s, max(extra, 0.0) / prompt_rows)

    def prompt_budget(self, gap_s: float | None, capacity: int) -> int:
        if self.decode_s is None or self.prompt_token_s is None or self.prompt_token_s <= 0:
            return min(capacity, 64)  # until both are measured: a small chunk is safe
        bound = gap_s if gap_s is not None else 2 * self.decode_s
        return max(MIN_PREFILL_CHUNK, min(capacity, int((bound - self.decode_s) / self.prompt_token_s)))


def _ema(previous: float | None, value: float, weight: float = 0.2) -> float:
    return value if previous is None else (1 - weight) * previous + weight * value


class BatchScheduler:
    def __init__(
        self,
        engine: Engine,
        slots: int = 4,
        slot_context: int = 2048,
        max_waiting: int = 16,
        *,
        state_cache: StateCache | None = None,
        token_gap_ms: float = 0,
        reuse_prefix: bool = True,
    ):
        """``state_cache``: where sequences taken over by another conversation keep their state
        (None: no saving). ``token_gap_ms``: the longest a streaming answer should wait between
        tokens while prompts are evaluated beside it; 0: twice a plain decoding step.
        ``reuse_prefix=False`` evaluates every prompt whole (for comparisons)."""
        self.engine = engine
        self.slots = slots
        self.slot_context = min(slot_context, engine.context_length)
        self.max_waiting = max_waiting
        self.state_cache = state_cache if reuse_prefix else None
        self.reuse_prefix = reuse_prefix
        self.token_gap_s = token_gap_ms / 1000 if token_gap_ms > 0 else None
        model = engine.llm._model
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.slot_context * slots
        params.n_batch = engine.llm.n_batch
        params.n_ubatch = engine.llm.n_batch
        params.n_seq_max = slots
        # One KV stream per sequence: attention then spans only a sequence's own cells (measured
        # 7% faster per 4-token step than a unified buffer on the bundled model).
        params.kv_unified = False
        params.n_threads = params.n_threads_batch = engine.threads
        if engine.lora_path is not None:
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as the engine: see there
        self._ctx = llama_cpp.llama_init_from_model(model.model, params)
        if self._ctx is None:
            raise LanternError("llama.cpp could not create a batched context; lower the slots")
        self._apply_adapter(engine)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = model.vocab
        self._writer = BatchWriter(engine.llm.n_batch)
        self._sequences = [_Sequence(seq_id) for seq_id in range(slots)]
        self._waiting: collections.deque[BatchedStream] = collections.deque()
        self._active: dict[int, _Slot] = {}
        self._costs = _StepCosts()
        self.longest_step_s = 0.0  # of steps that carried a streaming answer's next token
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="lantern-batch", daemon=True)
        self._thread.start()

    def _apply_adapter(self, engine: Engine) -> None:
        """A twin's adapter belongs to the context, not the model: apply the one the engine
        loaded to this context too, or a twin served over the API would answer as its base."""
        adapter = getattr(engine.llm, "_lora_adapter", None)
        if engine.lora_path is None or adapter is None:
            return
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
        scales = (ctypes.c_float * 1)(engine.lora_scale)
        if llama_cpp.llama_set_adapters_lora(self._ctx, adapters, 1, scales) != 0:
            llama_cpp.llama_free(self._ctx)
            raise LanternError(f"llama.cpp could not apply the adapter {engine.lora_path} to the batch")

    # --- the consumer side ------------------------------------------------------------------

    def plan_chat(self, messages: list[ChatMessage], max_tokens: int) -> PromptPlan:
        return _non_empty(fit_to_context(messages, self.engine.tokenize_chat, self.slot_context, max_tokens))

    def plan_text(self, prompt: str, max_tokens: int) -> PromptPlan:
        tokens = self.engine.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        plan = fit_to_context([ChatMessage("user", prompt)], lambda _: tokens, self.slot_context, max_tokens)
        return _non_empty(plan)

    def submit(self, plan: PromptPlan, settings: GenerationSettings) -> BatchedStream:
        stream = BatchedStream(_non_empty(plan), settings, asyncio.get_running_loop())
        with self._wake:
            # Requests whose clients gave up while waiting do not hold places in the line.
            self._waiting = collections.deque(w for w in self._waiting if not w.cancelled)
            if self._closing:
                raise LanternError("the server is shutting down")
            busy = len(self._active) >= self.slots
            if busy and len(self._waiting) >= self.max_waiting:
                raise QueueFullError(
                    f"all {self.slots} answer slots are busy and {len(self._waiting)} requests are waiting"
                )
            self._waiting.append(stream)
            self._wake.notify()
        return stream

    @property
    def busy_slots(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()  # never free llama.cpp's memory while the thread may be inside llama_decode
        closing = LanternError("the server is shutting down")
        for slot in list(self._active.values()):
            self._finish(slot, "error", closing)
        while self._waiting:
            self._waiting.popleft()._emit(closing)
        if self.state_cache is not None and self.state_cache.spill_dir is not None:
            # Conversations resume warm after a restart.
            for sequence in self._sequences:
                self.state_cache.save(self._ctx, sequence.seq_id, sequence.held.view())
            self.state_cache.flush()
        self._writer.free()
        llama_cpp.llama_free(self._ctx)

    # --- the scheduler thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self._waiting and not self._active:
                    self._wake.wait()
                if self._closing:
                    break
                admitted = self._admit()
            try:
                self._prepare(admitted)
                self._step()
            except Exception as exc:  # a failed decode ends every answer in it, not the server
                for slot in list(self._active.values()):
                    self._finish(slot, "error", LanternError(f"generation failed: {exc}"))

    def _admit(self) -> list[_Slot]:
        """Give waiting requests, first come first served, the free sequences that hold most of
        their prompts already. Runs under the lock; the KV work happens in ``_prepare``."""
        free = [s for s in self._sequences if s.seq_id not in self._active]
        admitted = []
        while free and self._waiting:
            stream = self._waiting.popleft()
            if stream.cancelled:
                stream._emit(DONE)
                continue
            tokens = stream.plan.tokens
            # Longest shared prefix first; among equals an empty sequence, then the least recently used.
            sequence = max(free, key=lambda s: (s.held.common_prefix(tokens), -len(s.held), -s.last_used))
            free.remove(sequence)
            settings = stream.settings
            slot = _Slot(
                sequence=sequence,
                stream=stream,
                sampler=make_sampler(settings, self._vocab),
                answer=AnswerText(
                    self.engine._pieces,
                    self._vocab,
                    StopMatcher(settings.stop + self.engine.template.stops),
                    stream.plan.max_new_tokens,
                ),
                known=TokenHistory(tokens),
                position=0,
                reused=0,
                speculate=settings.speculative == "prompt-lookup",
            )
            self._active[sequence.seq_id] = slot
            admitted.append(slot)
        return admitted

    def _prepare(self, admitted: list[_Slot]) -> None:
        """Keep what each new answer's sequence shares with its prompt, or restore a saved state
        that shares more; save what is about to be overwritten if it is worth keeping."""
        for slot in admitted:
            sequence = slot.sequence
            sequence.held, shared = keep_shared_cells(
                self._ctx,
                sequence.seq_id,
                sequence.held,
                slot.stream.plan.tokens,
                self.state_cache,
                self.reuse_prefix,
            )
            slot.position = slot.reused = shared

    def _step(self) -> None:
        for slot in [s for s in self._active.values() if s.stream.cancelled]:
            self._finish(slot, "cancelled")
        if not self._active:
            return
        writer = self._writer
        writer.clear()
        decoding = [s for s in self._active.values() if not s.prefilling]
        for slot in decoding:  # the next token of every answer under way, and its drafts
            seq_id = slot.sequence.seq_id
            slot.first_row = writer.add(slot.known.view()[-1], slot.position, seq_id, True)
            slot.draft = []
            if slot.speculate:
                room = min(MAX_DRAFT, slot.answer.max_new_tokens - slot.answer.completion_tokens - 1)
                room = min(room, self.slot_context - slot.position - 2, writer.room - len(decoding))
                slot.draft = slot.known.draft(room) if room > 0 else []
                for k, token in enumerate(slot.draft):
                    writer.add(token, slot.position + 1 + k, seq_id, True)
        decode_rows = writer.size
        budget = writer.room
        if decoding:
            budget = min(budget, self._costs.prompt_budget(self.token_gap_s, writer.room))
        # Then prompt tokens, within the step's bound: the prompt nearest its end first, so a
        # phone's short next turn is not kept waiting behind another phone's long first one.
        prefilling = sorted(
            (s for s in self._active.values() if s.prefilling),
            key=lambda s: len(s.stream.plan.tokens) - s.position,
        )
        for slot in prefilling:
            slot.first_row = -1
            if budget <= 0:
                continue
            tokens = slot.stream.plan.tokens
            chunk = tokens[slot.position : slot.position + budget]
            budget -= len(chunk)
            for token in chunk:
                last = slot.position == len(tokens) - 1
                row = writer.add(token, slot.position, slot.sequence.seq_id, last)
                slot.position += 1
            slot.first_row = row if not slot.prefilling else -1
        started = time.perf_counter()
        status = llama_cpp.llama_decode(self._ctx, writer.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        took = time.perf_counter() - started
        self._costs.learn(took, decode_rows, writer.size - decode_rows)
        if decoding:
            self.longest_step_s = max(self.longest_step_s, took)
        for slot in list(self._active.values()):
            if slot.first_row >= 0:
                self._sample(slot, in_decoding=any(slot is d for d in decoding))

    def _sample(self, slot: _Slot, in_decoding: bool) -> None:
        sampled = verify_draft(slot.sampler, self._ctx, slot.first_row, slot.draft)
        slot.first_row = -1
        if in_decoding:
            # The previous token and the accepted drafts are now in the cells; drop the rejected.
            kept = slot.position + len(sampled)
            if len(sampled) <= len(slot.draft):
                llama_cpp.llama_memory_seq_rm(self._memory, slot.sequence.seq_id, kept, -1)
            slot.drafted += len(slot.draft)
            slot.accepted += len(sampled) - 1
            slot.position = kept
        if slot.first_token_at is None:
            slot.first_token_at = time.perf_counter()
        for token in sampled:
            slot.known.append(token)
            text = slot.answer.take(token)
            if text:
                slot.stream._emit(text)
            if slot.answer.finish_reason is not None:
                self._finish(slot, slot.answer.finish_reason)
                return

    def _finish(self, slot: _Slot, reason: str, error: BaseException | None = None) -> None:
        sequence = slot.sequence
        self._active.pop(sequence.seq_id, None)
        if error is None:
            # Exactly what the cells hold, for the next request (drafts accepted past the end of
            # the answer are dropped from both).
            slot.known.truncate(slot.position)
            if slot.position > len(slot.known):
                llama_cpp.llama_memory_seq_rm(self._memory, sequence.seq_id, len(slot.known), -1)
            sequence.held = slot.known
        else:  # after a failed decode the cells' contents are unknown
            llama_cpp.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
            sequence.held = TokenHistory()
        sequence.last_used = time.monotonic()
        llama_cpp.llama_sampler_free(slot.sampler)
        tail = slot.answer.tail() if reason != "cancelled" else ""
        if tail:
            slot.stream._emit(tail)
        ended = time.perf_counter()
        plan = slot.stream.plan
        slot.stream.result = ChatResult(
            text=slot.answer.text,
            finish_reason=reason,
            prompt_tokens=len(plan.tokens),
            prompt_tokens_evaluated=len(plan.tokens) - slot.reused,
            completion_tokens=slot.answer.completion_tokens,
            dropped_messages=plan.dropped_messages,
            time_to_first_token_s=(slot.first_token_at or ended) - slot.stream.submitted_at,
            total_s=ended - slot.stream.submitted_at,
            draft_tokens=slot.drafted,
            accepted_draft_tokens=slot.accepted,
        )
        slot.stream._emit(error if error is not None else DONE)


def _non_empty(plan: PromptPlan) -> PromptPlan:
    if not plan.tokens:
        raise LanternError("the prompt is empty; send some text")
    return plan
