"""Sentence vectors cached on disk per model, keyed by text, so only new or edited questions are encoded."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class VectorCache:
    """Maps text -> vector for one model; persisted as an .npz next to a knowledge-base version tag."""

    def __init__(self, directory: Path, model_id: str, dim: int):
        self.path = directory / f"{_safe(model_id)}.npz"
        self.dim = dim
        self.vectors: dict[str, np.ndarray] = {}
        self.kb_version: int | None = None
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            self._seed_from_siblings()
            return
        try:
            with np.load(self.path, allow_pickle=False) as data:
                texts = [str(t) for t in data["texts"]]
                vecs = data["vectors"]
                version = int(data["kb_version"])
            if vecs.shape != (len(texts), self.dim) or vecs.dtype != np.float32:
                raise ValueError(f"shape {vecs.shape} does not match {len(texts)} texts of dim {self.dim}")
            self.vectors = dict(zip(texts, vecs, strict=True))
            self.kb_version = version
        except Exception as exc:  # a corrupted cache is rebuilt, never fatal
            log.warning("vector cache %s is unreadable (%s); rebuilding it", self.path, exc)
            self.vectors, self.kb_version = {}, None

    def _seed_from_siblings(self) -> None:
        """A new database (another CALLBOT_HOME, a test) starts from the vectors another database's cache
        holds for the same weights: the same text under the same weights has the same vector."""
        siblings = sorted((p for p in self.path.parent.parent.glob(f"*/{self.path.name}") if p != self.path),
                          key=lambda p: p.stat().st_mtime, reverse=True)
        for sibling in siblings[:1]:
            try:
                with np.load(sibling, allow_pickle=False) as data:
                    texts, vecs = [str(t) for t in data["texts"]], data["vectors"]
                if vecs.shape == (len(texts), self.dim) and vecs.dtype == np.float32:
                    self.vectors = dict(zip(texts, vecs, strict=True))
            except Exception as exc:  # only a head start: never fatal
                log.warning("could not seed vectors from %s (%s)", sibling, exc)

    def missing(self, texts: list[str]) -> list[str]:
        return list(dict.fromkeys(t for t in texts if t not in self.vectors))

    def add(self, texts: list[str], vectors: np.ndarray) -> None:
        for t, v in zip(texts, vectors, strict=True):
            self.vectors[t] = v.astype(np.float32)

    def matrix(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)

    def save(self, kb_version: int, keep: list[str]) -> None:
        """Persist only the texts in use (atomically: a crash never leaves a half-written cache)."""
        keep = list(dict.fromkeys(keep))
        self.vectors = {t: self.vectors[t] for t in keep if t in self.vectors}
        self.kb_version = kb_version
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".npz.tmp")
        os.close(fd)
        texts = list(self.vectors)
        with open(tmp, "wb") as fh:  # a file object: np.savez would otherwise append ".npz" to the name
            np.savez(fh, texts=np.array(texts, dtype=str), vectors=self.matrix(texts), kb_version=np.array(kb_version))
        os.replace(tmp, self.path)


def _safe(model_id: str) -> str:
    return hashlib.sha1(model_id.encode()).hexdigest()[:12] + "-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)[-60:]
