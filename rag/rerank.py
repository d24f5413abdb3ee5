"""Second-stage rerankers: the first stage's top passages rescored by a slower, closer reading.

No pretrained cross-encoder ships with Lantern, so the rerankers here use the models that do:

* ``MaxSimReranker``: late interaction (ColBERT's MaxSim) over the bundled embedder's token
  vectors: every query token is matched with its most similar passage token, and the matches are
  averaged. The passages are encoded at query time: stored token vectors would cost about
  as much as the passages' tokens times 384 floats each (see bench/RESULTS.md), far too big.
* ``LlmJudgeReranker``: the chat model asked whether the passage answers the question; the score
  is log P(yes) - log P(no) of its next token.

Measured in bench/bench_rerank.py; chosen (or not) on the dev split only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from rag.errors import MemoryStoreError


class Reranker(Protocol):
    name: str

    def scores(self, query: str, passages: list[str]) -> np.ndarray:
        """One relevance score per passage, higher is better (any scale)."""
        ...


@dataclass(frozen=True)
class RerankStage:
    """The fused order's top ``depth`` passages reordered by ``weight`` * reranker score +
    (1 - ``weight``) * first-stage score, both min-max scaled over those passages."""

    reranker: Reranker
    depth: int = 30  # memory.rerank_depth; best on the dev half
    weight: float = 1.0

    def reorder(
        self, query: str, passages: list[str], first_stage: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The new order of ``passages`` (indices, best first) and their blended scores in that order."""
        blended = self.blend(self.reranker.scores(query, passages), first_stage)
        order = np.argsort(-blended, kind="stable")
        return order, blended[order]

    def blend(self, rerank: np.ndarray, first_stage: np.ndarray) -> np.ndarray:
        return self.weight * min_max(rerank) + (1 - self.weight) * min_max(first_stage)


@runtime_checkable
class TokenEmbedder(Protocol):
    def token_vectors(self, texts: list[str]) -> list[np.ndarray]: ...


class MaxSimReranker:
    """Late interaction over the embedder's contextual token vectors (unit length): the mean over
    query tokens of the best cosine with any passage token."""

    name = "maxsim"

    def __init__(self, embedder: TokenEmbedder):
        self.embedder = embedder

    def scores(self, query: str, passages: list[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        vectors = self.embedder.token_vectors([query, *passages])
        q = vectors[0]
        return np.array([float((q @ p.T).max(axis=1).mean()) for p in vectors[1:]], dtype=np.float32)


JUDGE_PROMPT = (
    "<|im_start|>system\nYou judge whether a passage answers a question. Reply yes or no.<|im_end|>\n"
    "<|im_start|>user\nQuestion: {question}\n\nPassage:\n"
)
JUDGE_ASK = "\n\nDoes this passage answer the question?<|im_end|>\n<|im_start|>assistant\n"


class LlmJudgeReranker:
    """The chat model as a relevance judge: log P(" yes") - log P(" no") after the question and
    the passage (truncated to ``passage_tokens``). The question's prefix is evaluated once per
    query and reused for every passage. ChatML prompt: the bundled SmolLM2's template."""

    name = "judge"

    def __init__(self, model_path: Path, threads: int = 0, passage_tokens: int = 256):
        import llama_cpp

        from app.llama_log import quiet_llama_cpp

        if not Path(model_path).is_file():
            raise MemoryStoreError(f"the judge model {model_path} does not exist")
        quiet_llama_cpp()
        self.passage_tokens = passage_tokens
        self._lock = threading.Lock()  # one llama context: one judgement at a time
        self.llm = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=1024,
            n_batch=512,
            n_threads=threads or None,
            n_threads_batch=threads or None,
            verbose=False,
        )
        self._yes = self._token_ids(("yes", "Yes", " yes", " Yes"))
        self._no = self._token_ids(("no", "No", " no", " No"))

    def _token_ids(self, words: tuple[str, ...]) -> list[int]:
        ids = {self.llm.tokenize(w.encode(), add_bos=False, special=False)[0] for w in words}
        return sorted(ids)

    def scores(self, query: str, passages: list[str]) -> np.ndarray:
        with self._lock:
            return self._scores(query, passages)

    def _scores(self, query: str, passages: list[str]) -> np.ndarray:
        tokenize = self.llm.tokenize
        prefix = tokenize(JUDGE_PROMPT.format(question=query).encode(), add_bos=False, special=True)
        ask = tokenize(JUDGE_ASK.encode(), add_bos=False, special=True)
        self.llm.reset()
        self.llm.eval(prefix)
        out = []
        for passage in passages:
            body = tokenize(passage.encode(), add_bos=False, special=False)[: self.passage_tokens]
            self.llm.n_tokens = len(prefix)  # the next eval drops everything after the question
            self.llm.eval(body + ask)
            logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))
            out.append(_logsumexp(logits[self._yes]) - _logsumexp(logits[self._no]))
        return np.array(out, dtype=np.float32)


def _logsumexp(values: np.ndarray) -> float:
    top = float(values.max())
    return top + float(np.log(np.exp(values - top).sum()))


def min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)
