"""An encoder that remembers the vectors of the sentences it has encoded.

Measuring runs encode the same dev sentences again and again: cross-fitting calibrates on one half and judges the
other, both ways, and tuning the lexical head's weight does that once per weight (nlu.lexical_weight). The matcher
encodes one query at a time, so nothing else caches them; the knowledge base's own questions have the vector cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class MemoEncoder:
    """Wraps an encoder; ``encode`` returns remembered rows and encodes only the sentences it has not seen.
    Every other attribute (name, dim, cache_id, path) is the wrapped encoder's, so vector caches stay shared."""

    def __init__(self, encoder: Any, max_items: int = 200_000):
        self.wrapped = encoder
        self.max_items = max_items
        self._rows: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._rows))
        if missing:
            vectors = self.wrapped.encode(missing, batch_size=batch_size, progress=progress)
            if len(self._rows) + len(missing) <= self.max_items:
                self._rows.update(zip(missing, vectors, strict=True))
            else:  # full: serve this call without remembering it
                fresh = dict(zip(missing, vectors, strict=True))
                return np.stack([self._rows[t] if t in self._rows else fresh[t] for t in texts])
        if not texts:
            return self.wrapped.encode(texts, batch_size=batch_size, progress=progress)
        return np.stack([self._rows[t] for t in texts])
