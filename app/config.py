"""The typed config file in the data home; every value has a default that works unedited."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_type_hints

from app.atomic import atomic_write_text
from app.errors import LanternError

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_SYSTEM_PROMPT = "You are Lantern, a helpful assistant that runs offline on the user's own computer."


SPECULATIVE_CHOICES = ("off", "prompt-lookup")
RERANK_CHOICES = ("off", "maxsim", "judge")  # rag/rerank.py
MIN_IVFPQ_ABOVE = 10_000  # IVF-PQ codebooks want about 10,000 vectors to train on
REPETITION_GUARDS = ("penalty", "dry", "off")


@dataclass(frozen=True)
class RuntimeConfig:
    context_length: int = 4096
    threads: int = 0  # 0: one thread per CPU core
    batch_size: int = 512
    speculative: str = "off"  # "prompt-lookup": guess tokens from n-grams of the chat, checked by the model
    state_cache_mb: int = 256  # memory for saved conversation states (resume warm); 0: none
    state_disk_mb: int = 1024  # the same on disk in the data home (not with an encrypted home); 0: none
    token_gap_ms: int = 0  # serve: longest pause of a streaming answer while prompts run; 0: auto


@dataclass(frozen=True)
class GenerationConfig:
    temperature: float = 0.2  # low: small local models wander at higher temperatures
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int | None = None  # None: a fresh random seed per answer
    # Small models fall into loops (one sentence until the token limit). "penalty": the classic
    # repeat penalty on every token of the answer's last 64; "dry": llama.cpp's DRY sampler, which
    # makes a token that would extend a run already said less likely, the more so the longer the
    # run; "off". Chosen by bench/bench_repetition.py on its tuning set (bench/RESULTS.md,
    # "Repetition guard"): "penalty" left 6 of 25 answers looping, "dry" 8, none 14.
    repetition_guard: str = "penalty"
    dry_multiplier: float = 0.8  # strength of "dry"
    repeat_penalty: float = 1.1  # strength of "penalty" (1.0: none)


@dataclass(frozen=True)
class MemoryConfig:
    enabled: bool = True  # retrieve from memory in ask/chat when it holds notes
    top_k: int = 4  # passages put in the prompt at most
    context_tokens: int = 1024  # prompt tokens the passages may take at most
    min_similarity: float = 0.25  # passages less similar to the question stay out of the prompt
    per_note: int = 1  # passages of one note among the results at most; 0: no limit
    hyde: bool = False  # expand the question with a passage the chat model writes first (measured, off)
    embedder: str = ""  # a local sentence-transformers folder; empty: the bundled all-MiniLM-L6-v2
    key_file: str = ""  # an encrypted home: unlock it with this file, not a passphrase
    # A second stage over the fused top rerank_depth passages (bench/bench_rerank.py): "maxsim" (late
    # interaction over the embedder's token vectors) or "judge" (the chat model's yes/no; slow, weak).
    # Depth 30 and weight 1.0 (the reranker's score alone) were best on the dev half; off by default
    # because it adds the encoding of rerank_depth passages to every search (~1 s on 2 cores at 30).
    rerank: str = "off"
    rerank_depth: int = 30
    rerank_weight: float = 1.0
    tune_minutes: float = (
        10.0  # `memory tune` stops training after this long; the held-out guard still decides
    )
    # Above this many passages the dense index is IVF-PQ trained on the memory's own vectors, its
    # probe count chosen by measured recall@10 against exact search (shown by `memory stats`).
    ivfpq_above: int = 200_000


@dataclass(frozen=True)
class RemoteConfig:
    """How Lantern talks to a model served elsewhere (`lantern models add-remote`)."""

    timeout_s: float = 120.0  # longest wait for the engine's next bytes (its first token included)
    connect_timeout_s: float = 5.0
    retries: int = 3  # attempts after the first when the engine is down, only before anything streamed


@dataclass(frozen=True)
class _TopLevel:
    default_model: str = DEFAULT_MODEL_NAME
    system_prompt: str = DEFAULT_SYSTEM_PROMPT


@dataclass(frozen=True)
class Config:
    default_model: str = DEFAULT_MODEL_NAME
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)


DEFAULT_CONFIG_TEXT = f'''# Lantern configuration. Every key is optional; delete one to get its default back.

default_model = "{DEFAULT_MODEL_NAME}"
system_prompt = "{DEFAULT_SYSTEM_PROMPT}"

[runtime]
context_length = 4096   # tokens the model sees at once; old turns are trimmed to fit
threads = 0             # 0 means one per CPU core
batch_size = 512
speculative = "off"     # "prompt-lookup": guess tokens from the chat itself (same answers)
state_cache_mb = 256    # memory for saved conversation states, so a conversation that returns resumes warm
state_disk_mb = 1024    # the same on disk in the data home (never with an encrypted home); 0 turns it off
token_gap_ms = 0        # serve: longest pause of a streaming answer while new prompts run; 0 means auto

[generation]
temperature = 0.2       # higher is more varied, lower more focused
top_p = 0.95
max_tokens = 512
# seed = 42            # set for repeatable answers
repetition_guard = "penalty"  # keeps answers out of loops: "penalty" (repeat penalty), "dry" or "off"
dry_multiplier = 0.8    # how hard "dry" pushes away from repeating itself
repeat_penalty = 1.1    # how hard "penalty" does (1.0 is none)

[memory]
enabled = true          # answer from your notes ('lantern memory add PATH'); --no-memory skips it
top_k = 4               # passages given to the model at most
context_tokens = 1024   # prompt tokens those passages may use at most
min_similarity = 0.25   # cosine below which a passage is left out as unrelated
per_note = 1            # passages of one note among the results at most (0: no limit)
hyde = false            # let the chat model draft an answer to search with too (slower; see RESULTS)
embedder = ""           # a local sentence-transformers folder; empty means the bundled all-MiniLM-L6-v2
key_file = ""           # encrypted data home: a key file instead of a passphrase
rerank = "off"          # "maxsim" or "judge": rescore the best passages more closely (slower searches)
rerank_depth = 30       # how many of the best passages the reranker reads; each costs time
rerank_weight = 1.0     # the reranker's share of the final order, against the first search's
tune_minutes = 10.0     # 'lantern memory tune' trains at most this long (CPU)
ivfpq_above = 200000    # passages above which search uses a compact IVF-PQ index (recall in 'memory stats')

[remote]                # models served elsewhere ('lantern models add-remote NAME URL')
timeout_s = 120         # seconds to wait for the engine's next bytes, the first token included
connect_timeout_s = 5
retries = 3             # when the engine is down, tries again (0.25 s, 0.5 s, 1 s...) before any text came
# Remote engines get temperature, top_p, seed, max_tokens and stop; the repetition guard and
# runtime.speculative are local only (strict servers reject unknown fields), so the engine's own
# defaults apply.
'''


def _check_type(where: str, value: Any, expected: type) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected in (int, float) and isinstance(value, bool)):
        raise LanternError(f"{where} must be {expected.__name__}, got {value!r}")
    return value


def _section(cls: type, table: Any, prefix: str) -> Any:
    """Build one config dataclass from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(table, dict):
        raise LanternError(f"[{prefix.rstrip('.')}] must be a table")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in hints:
            raise LanternError(f"unknown key {prefix}{key}; known keys: {', '.join(hints)}")
        expected = next(t for t in get_args(hints[key]) or (hints[key],) if t is not type(None))
        if expected in (int, float, str, bool):
            value = _check_type(f"{prefix}{key}", value, expected)
        values[key] = value
    return cls(**values)


def _validate(config: Config) -> Config:
    rt, gen, memory, remote = config.runtime, config.generation, config.memory, config.remote
    checks = [
        (rt.context_length >= 256, "runtime.context_length must be at least 256"),
        (rt.threads >= 0, "runtime.threads must be 0 (auto) or a positive count"),
        (rt.batch_size >= 1, "runtime.batch_size must be positive"),
        (
            rt.speculative in SPECULATIVE_CHOICES,
            f"runtime.speculative must be one of {', '.join(SPECULATIVE_CHOICES)}",
        ),
        (rt.state_cache_mb >= 0, "runtime.state_cache_mb must be 0 (off) or a size in MB"),
        (rt.state_disk_mb >= 0, "runtime.state_disk_mb must be 0 (off) or a size in MB"),
        (rt.token_gap_ms >= 0, "runtime.token_gap_ms must be 0 (auto) or milliseconds"),
        (0.0 <= gen.temperature <= 5.0, "generation.temperature must be between 0 and 5"),
        (0.0 < gen.top_p <= 1.0, "generation.top_p must be in (0, 1]"),
        (gen.max_tokens >= 1, "generation.max_tokens must be positive"),
        (
            gen.repetition_guard in REPETITION_GUARDS,
            f"generation.repetition_guard must be one of {', '.join(REPETITION_GUARDS)}",
        ),
        (0.0 <= gen.dry_multiplier <= 10.0, "generation.dry_multiplier must be between 0 and 10"),
        (1.0 <= gen.repeat_penalty <= 3.0, "generation.repeat_penalty must be between 1 and 3"),
        (memory.top_k >= 1, "memory.top_k must be positive"),
        (memory.context_tokens >= 64, "memory.context_tokens must be at least 64"),
        (-1.0 <= memory.min_similarity <= 1.0, "memory.min_similarity must be between -1 and 1"),
        (memory.per_note >= 0, "memory.per_note must be 0 (no limit) or more"),
        (memory.rerank in RERANK_CHOICES, f"memory.rerank must be one of {', '.join(RERANK_CHOICES)}"),
        (memory.rerank_depth >= 1, "memory.rerank_depth must be positive"),
        (0.0 <= memory.rerank_weight <= 1.0, "memory.rerank_weight must be between 0 and 1"),
        (remote.timeout_s > 0, "remote.timeout_s must be positive seconds"),
        (remote.connect_timeout_s > 0, "remote.connect_timeout_s must be positive seconds"),
        (remote.retries >= 0, "remote.retries must be 0 or more"),
        (
            memory.ivfpq_above >= MIN_IVFPQ_ABOVE,
            f"memory.ivfpq_above must be at least {MIN_IVFPQ_ABOVE} (IVF-PQ trains on the memory's vectors)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise LanternError(message)
    return config


def parse_config(text: str) -> Config:
    data = tomllib.loads(text)
    runtime = _section(RuntimeConfig, data.pop("runtime", {}), "runtime.")
    generation = _section(GenerationConfig, data.pop("generation", {}), "generation.")
    memory = _section(MemoryConfig, data.pop("memory", {}), "memory.")
    remote = _section(RemoteConfig, data.pop("remote", {}), "remote.")
    top = _section(_TopLevel, data, "")
    return _validate(
        Config(**vars(top), runtime=runtime, generation=generation, memory=memory, remote=remote)
    )


def load_config(path: Path) -> Config:
    """Read the config file, writing the commented default first if there is none."""
    if not path.exists():
        atomic_write_text(path, DEFAULT_CONFIG_TEXT)
    try:
        return parse_config(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise LanternError(f"{path} is not valid TOML ({exc}); fix it or delete it for defaults") from None
    except UnicodeDecodeError:
        raise LanternError(f"{path} is not UTF-8 text; fix it or delete it for defaults") from None
    except LanternError as exc:
        raise LanternError(f"{path}: {exc}") from None
