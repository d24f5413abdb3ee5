"""Measured quality through llama.cpp: perplexity over a text with a sliding window, and how far a
model B (quantized, fine-tuned...) strays from a model A on the same positions.

Windows of `window` tokens advance by `stride`; each token is scored once, with at least
window - stride tokens of context (the first window scores from its second token).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantize.cores import usable_cores
from quantize.errors import ConversionError
from quantize.native_output import captured_native_output


@dataclass(frozen=True)
class ModelMeasure:
    name: str
    path: str
    file_size: int
    perplexity: float
    tokens_scored: int
    decode_tokens_per_second: float | None


@dataclass(frozen=True)
class Comparison:
    a: ModelMeasure
    b: ModelMeasure
    kl_divergence: float  # mean KL(A || B) over the scored positions, in nats
    kl_divergence_p99: float
    top1_agreement: float  # share of positions where A and B pick the same next token
    positions: int


@dataclass(frozen=True)
class EvalSettings:
    window: int = 512
    stride: int = 256
    max_tokens: int = 8192  # cap on the text's tokens, so a long book stays quick
    threads: int = 0
    lora_path: str | None = None  # an adapter applied to every model measured (the twin)
    lora_scale: float = 1.0
    shrink_for_short_text: bool = False  # a short text gets a smaller window instead of an error


def _open(path: Path, settings: EvalSettings, all_logits: bool):
    import llama_cpp

    kwargs = {}
    if settings.lora_path:
        kwargs.update(lora_path=settings.lora_path, lora_scale=settings.lora_scale)
    with captured_native_output() as output:
        try:
            return llama_cpp.Llama(
                model_path=str(path),
                n_ctx=settings.window,
                n_batch=settings.window,
                n_ubatch=settings.window,
                logits_all=all_logits,
                n_threads=settings.threads or usable_cores(),
                n_threads_batch=settings.threads or usable_cores(),
                verbose=False,
                **kwargs,
            )
        except (ValueError, RuntimeError) as exc:
            failure = exc
    raise ConversionError(f"llama.cpp could not load {path}: {failure}\n{output.tail()}")


def fitted(settings: EvalSettings, n_tokens: int) -> EvalSettings:
    """The settings, with the window halved until two strides fit in a short text (at least 32)."""
    window = settings.window
    while settings.shrink_for_short_text and window > 32 and n_tokens < window:
        window //= 2
    if window == settings.window:
        return settings
    return dataclasses.replace(settings, window=window, stride=window // 2)


def _tokens(llm, text: str, settings: EvalSettings) -> list[int]:
    if not text.strip():
        raise ConversionError("the evaluation text is empty")
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)[: settings.max_tokens]
    if len(tokens) < 2 * fitted(settings, len(tokens)).stride:
        raise ConversionError(
            f"the evaluation text has {len(tokens)} tokens; give at least {2 * settings.stride} "
            "(a few pages) for a meaningful perplexity"
        )
    return tokens


def windows(n_tokens: int, window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(start, end, first scored index within the window) for each window."""
    scored_until = 0
    for start in range(0, n_tokens, stride):
        end = min(start + window, n_tokens)
        yield start, end, max(1, scored_until - start)
        scored_until = end
        if end == n_tokens:
            break


def scored_windows(tokens: list[int], settings: EvalSettings):
    """(window tokens, rows whose next token is scored, those next tokens) for each window."""
    for start, end, first in windows(len(tokens), settings.window, settings.stride):
        window = tokens[start:end]
        yield window, np.arange(first - 1, len(window) - 1), np.array(window[first:])


def _target_log_prob(log_probs: np.ndarray, targets: np.ndarray) -> float:
    return float(log_probs[np.arange(len(targets)), targets].sum(dtype=np.float64))


def _log_probs(llm, tokens: list[int], rows: np.ndarray) -> np.ndarray:
    """Log-softmax of the logits at ``rows`` (positions whose next token is scored)."""
    llm.reset()
    llm.eval(tokens)
    logits = np.asarray(llm.scores[: len(tokens)])[rows].astype(np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def _decode_speed(path: Path, settings: EvalSettings, prompt: list[int], count: int = 64) -> float:
    llm = _open(path, settings, all_logits=False)
    try:
        llm.eval(prompt[:32])
        started = time.perf_counter()
        for _ in range(count):
            next_token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([next_token])
        return count / (time.perf_counter() - started)
    finally:
        llm.close()


def measure_perplexity(path: Path, name: str, text: str, settings: EvalSettings, speed: bool = True):
    llm = _open(path, settings, all_logits=True)
    try:
        tokens = _tokens(llm, text, settings)
        settings = fitted(settings, len(tokens))
        nll, scored = 0.0, 0
        for window, rows, targets in scored_windows(tokens, settings):
            nll -= _target_log_prob(_log_probs(llm, window, rows), targets)
            scored += len(targets)
    finally:
        llm.close()
    rate = _decode_speed(path, settings, tokens) if speed else None
    return ModelMeasure(name, str(path), Path(path).stat().st_size, math.exp(nll / scored), scored, rate)


def compare_models(
    a_path: Path, a_name: str, b_path: Path, b_name: str, text: str, settings: EvalSettings
) -> Comparison:
    return compare_against(a_path, a_name, [(b_path, b_name)], text, settings)[0]


def compare_against(
    a_path: Path, a_name: str, others: list[tuple[Path, str]], text: str, settings: EvalSettings
) -> list[Comparison]:
    """Compare each of ``others`` with A on the same windows; A is evaluated once per window."""
    a = _open(a_path, settings, all_logits=True)
    opened = []
    try:
        tokens = _tokens(a, text, settings)
        for path, name in others:
            b = _open(path, settings, all_logits=True)
            opened.append(b)
            same_vocab = b.n_vocab() == a.n_vocab()
            if not same_vocab or b.tokenize(text.encode("utf-8"), add_bos=False)[:64] != tokens[:64]:
                raise ConversionError(
                    f"{a_name} and {name} have different vocabularies; a comparison needs the same tokenizer"
                )
        nll_a, nll_b = 0.0, [0.0] * len(others)
        kls: list[list[np.ndarray]] = [[] for _ in others]
        agree = [0] * len(others)
        for window, rows, targets in scored_windows(tokens, settings):
            lp_a = _log_probs(a, window, rows)
            nll_a -= _target_log_prob(lp_a, targets)
            p_a = np.exp(lp_a)
            for i, b in enumerate(opened):
                lp_b = _log_probs(b, window, rows)
                nll_b[i] -= _target_log_prob(lp_b, targets)
                kls[i].append((p_a * (lp_a - lp_b)).sum(axis=1, dtype=np.float64))
                agree[i] += int((lp_a.argmax(axis=1) == lp_b.argmax(axis=1)).sum())
    finally:
        a.close()
        for b in opened:
            b.close()
    positions = sum(len(k) for k in kls[0])

    def measure(name: str, path: Path, nll: float) -> ModelMeasure:
        rate = _decode_speed(path, settings, tokens)
        return ModelMeasure(
            name, str(path), Path(path).stat().st_size, math.exp(nll / positions), positions, rate
        )

    base = measure(a_name, a_path, nll_a)
    results = []
    for i, (path, name) in enumerate(others):
        kl = np.concatenate(kls[i])
        results.append(
            Comparison(
                base,
                measure(name, path, nll_b[i]),
                float(kl.mean()),
                float(np.percentile(kl, 99)),
                agree[i] / positions,
                positions,
            )
        )
    return results
