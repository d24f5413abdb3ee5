"""What every answer needs while it is decoded, whichever loop drives llama.cpp.

The single-stream engine (CLI, TUI) and the batch scheduler (API) both decode with llama.cpp's
low-level batch API; this module holds what they share: the sampler chain, a batch writer, the
text an answer has produced so far (UTF-8 and stop sequences handled), and speculative
verification of drafted tokens.
"""

from __future__ import annotations

import codecs
import ctypes
import secrets
from dataclasses import dataclass, field

import llama_cpp

from app.config import REPETITION_GUARDS, GenerationConfig
from app.engine_text import StopMatcher, TokenPieces

_GUARD_DEFAULTS = GenerationConfig()
# DRY's fixed parts, llama.cpp's defaults: a repeat may run 2 tokens before it is penalised, the
# penalty grows by 1.75x per further token, and a match never spans a line break, a colon, a
# quote or an asterisk (so Markdown structure and "Key: value" lines are not runs).
DRY_BASE = 1.75
DRY_ALLOWED_LENGTH = 2
DRY_SEQUENCE_BREAKERS = ("\n", ":", '"', "*")
PENALTY_LAST_N = 64  # the repeat penalty looks at this many of the latest tokens (llama.cpp's default)
# DRY's breakers also let a loop of short lines ("# " 150 times) through: seen in the tuning set.


@dataclass(frozen=True)
class GenerationSettings:
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None  # None: a fresh random seed for every answer
    stop: tuple[str, ...] = ()
    speculative: str = "off"  # "prompt-lookup": draft tokens from n-grams already in the chat
    repetition_guard: str = _GUARD_DEFAULTS.repetition_guard  # "penalty", "dry" or "off" (config.py)
    dry_multiplier: float = _GUARD_DEFAULTS.dry_multiplier
    repeat_penalty: float = _GUARD_DEFAULTS.repeat_penalty


def make_sampler(settings: GenerationSettings, vocab):
    """llama.cpp's sampler chain for these settings and the model's ``vocab``; free it with
    ``llama_sampler_free``.

    First the repetition guard, over the whole vocabulary as llama.cpp orders it; then greedy at
    temperature 0, otherwise llama.cpp's usual defaults (top-k 40, min-p 0.05) around the
    requested top-p and temperature. The guard applies at temperature 0 too: greedy decoding
    loops most of all, and the guard is deterministic, so greedy answers stay repeatable. It sees
    only the answer's own tokens (the prompt is never accepted into the chain), so quoting a
    note or an earlier turn is not penalised; speculative drafts are checked through the same
    chain, token by token, so they still give the plain answer.
    """
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    guard = _repetition_guard(settings, vocab)
    if guard is not None:
        add(chain, guard)
    if settings.temperature <= 0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    seed = settings.seed if settings.seed is not None else secrets.randbits(31)
    add(chain, llama_cpp.llama_sampler_init_top_k(40))
    add(chain, llama_cpp.llama_sampler_init_top_p(settings.top_p, 1))
    add(chain, llama_cpp.llama_sampler_init_min_p(0.05, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(settings.temperature))
    add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain


def _repetition_guard(settings: GenerationSettings, vocab):
    if settings.repetition_guard == "dry" and settings.dry_multiplier > 0:
        breakers = (ctypes.c_char_p * len(DRY_SEQUENCE_BREAKERS))(
            *(b.encode("utf-8") for b in DRY_SEQUENCE_BREAKERS)
        )  # llama.cpp copies them at init
        return llama_cpp.llama_sampler_init_dry(
            vocab,
            settings.dry_multiplier,
            DRY_BASE,
            DRY_ALLOWED_LENGTH,
            max(settings.max_tokens, 64),  # the whole answer
            breakers,
            len(DRY_SEQUENCE_BREAKERS),
        )
    if settings.repetition_guard == "penalty" and settings.repeat_penalty != 1.0:
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        return llama_cpp.llama_sampler_init_penalties(
            n_vocab, PENALTY_LAST_N, settings.repeat_penalty, 0.0, 0.0
        )
    if settings.repetition_guard not in REPETITION_GUARDS:
        raise ValueError(f"unknown repetition guard {settings.repetition_guard!r}")
    return None


class BatchWriter:
    """A ``llama_batch`` filled token by token; ``add`` returns the token's index in the batch."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.batch = llama_cpp.llama_batch_init(capacity, 0, 1)

    def clear(self) -> None:
        self.batch.n_tokens = 0

    @property
    def size(self) -> int:
        return self.batch.n_tokens

    @property
    def room(self) -> int:
        return self.capacity - self.batch.n_tokens

    def add(self, token: int, position: int, seq_id: int, logits: bool) -> int:
        batch, i = self.batch, self.batch.n_tokens
        batch.token[i] = token
        batch.pos[i] = position
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = logits
        batch.n_tokens = i + 1
        return i

    def free(self) -> None:
        llama_cpp.llama_batch_free(self.batch)


@dataclass
class AnswerText:
    """The text of one answer as its tokens arrive: UTF-8 across token boundaries, stop
    sequences held back until they cannot match, the end-of-generation token, the token limit."""

    pieces_of: TokenPieces
    vocab: object
    stops: StopMatcher
    max_new_tokens: int
    pieces: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    finish_reason: str | None = None  # set once the answer is over
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def take(self, token: int) -> str:
        """Account for one sampled token; returns the text now safe to show (maybe empty)."""
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            self.finish_reason = "stop"
            return ""
        self.completion_tokens += 1
        text, hit_stop = self.stops.feed(self.decoder.decode(self.pieces_of[token]))
        if text:
            self.pieces.append(text)
        if hit_stop:
            self.finish_reason = "stop"
        elif self.completion_tokens >= self.max_new_tokens:
            self.finish_reason = "length"
        return text

    def tail(self) -> str:
        """Text held back as a possible stop sequence that never became one."""
        text = self.stops.flush() + self.decoder.decode(b"", final=True)
        if text:
            self.pieces.append(text)
        return text

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def verify_draft(sampler, ctx, first_index: int, draft: list[int]) -> list[int]:
    """Sample at the batch rows ``first_index, first_index + 1, ...`` in turn while the drafted
    tokens keep matching what was sampled; returns the sampled tokens (accepted drafts, then the
    first token the model chose differently, or the one after the last draft).

    Every token is sampled from the model's own distribution at its position, so the output is
    the one plain decoding gives (identically distributed; at temperature 0 the same tokens, up to
    llama.cpp's KV-length-dependent rounding at near-ties, see the README).
    """
    sampled = []
    for k in range(len(draft) + 1):
        token = llama_cpp.llama_sampler_sample(sampler, ctx, first_index + k)
        sampled.append(token)
        if k == len(draft) or token != draft[k]:
            break
    return sampled
