"""What the network reads for each complaint: word ids (``WordFeaturizer``) or a transformer's token states
(``StateFeaturizer``). Both keep a long complaint's opening and close when it has more than ``max_tokens``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nlu.complaints.words import WordVectors, train_word_vectors, words


class Featurizer(Protocol):
    network_encoder: str  # the FMLCNet encoder it feeds: "gru" (word ids) or "states"
    kind: str  # what the model card records: "word2vec" or the encoder's name

    @property
    def dim(self) -> int: ...
    def fit(self, texts: list[str], progress: bool = False) -> list[np.ndarray]: ...
    def features(self, texts: list[str]) -> list[np.ndarray]: ...
    def embeddings(self) -> np.ndarray | None: ...


def _head_and_tail(seq: np.ndarray, limit: int) -> np.ndarray:
    if len(seq) <= limit:
        return seq
    head = limit * 3 // 4
    return np.concatenate([seq[:head], seq[-(limit - head):]])


class WordFeaturizer:
    network_encoder = "gru"
    kind = "word2vec"

    def __init__(self, cache_dir: Path, word_dim: int = 300, max_tokens: int = 256, vectors: WordVectors | None = None,
                 corpus_limit: int = 0):
        self.cache_dir, self.word_dim, self.max_tokens, self.vectors = cache_dir, word_dim, max_tokens, vectors
        self.corpus_limit = corpus_limit

    @property
    def dim(self) -> int:
        return self.vectors.dim if self.vectors is not None else self.word_dim

    def fit(self, texts: list[str], progress: bool = False) -> list[np.ndarray]:
        self.vectors = train_word_vectors(texts, self.cache_dir, self.word_dim, corpus_limit=self.corpus_limit)
        return self.features(texts)

    def features(self, texts: list[str]) -> list[np.ndarray]:
        assert self.vectors is not None, "fit() or load word vectors first"
        out = []
        for text in texts:
            ids = np.array(self.vectors.ids(words(text)) or [1], dtype=np.int64)  # nothing but punctuation: one UNK
            out.append(_head_and_tail(ids, self.max_tokens))
        return out

    def embeddings(self) -> np.ndarray | None:
        return self.vectors.vectors if self.vectors is not None else None


class StateFeaturizer:
    network_encoder = "states"

    def __init__(self, encoder: Any, max_tokens: int = 256, memo: dict[str, np.ndarray] | None = None):
        self.encoder, self.max_tokens = encoder, max_tokens
        self.kind = getattr(encoder, "name", "encoder")
        self.memo = memo  # text → states, shared by trainings over the same texts (benchmarks: one per seed)

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    def fit(self, texts: list[str], progress: bool = False) -> list[np.ndarray]:
        if not progress:
            return self.features(texts)
        from tqdm import tqdm

        out: list[np.ndarray] = []
        for start in tqdm(range(0, len(texts), 64), desc=f"token states ({self.kind})", unit="batch"):
            out += self.features(texts[start:start + 64])
        return out

    def features(self, texts: list[str]) -> list[np.ndarray]:
        # The tokenizer truncates to the first max_tokens: e5 is not run on more (cost grows with length squared).
        if self.memo is None:
            return self.encoder.token_states(texts, self.max_tokens)
        todo = [t for t in dict.fromkeys(texts) if t not in self.memo]
        self.memo.update(zip(todo, self.encoder.token_states(todo, self.max_tokens), strict=True))
        return [self.memo[t] for t in texts]

    def embeddings(self) -> np.ndarray | None:
        return None


def pad(features: list[np.ndarray]):  # type: ignore[no-untyped-def]
    """A batch: (inputs, lengths) tensors, zero-padded to the longest."""
    import torch

    lengths = torch.tensor([len(f) for f in features], dtype=torch.long)
    longest = int(lengths.max()) if len(features) else 1
    if features and features[0].dtype == np.int64:
        x = np.zeros((len(features), longest), dtype=np.int64)
        for i, f in enumerate(features):
            x[i, :len(f)] = f
    else:
        dim = features[0].shape[1]
        x = np.zeros((len(features), longest, dim), dtype=np.float32)
        for i, f in enumerate(features):
            x[i, :len(f)] = f
    return torch.from_numpy(x), lengths
