"""A character n-gram intent classifier beside the encoder: the sparse half of what Rasa's DIET sees.

The matcher's cosine compares a caller's reply with the closest KB wording as a whole; a dense sentence vector
blurs the one character that carries a short reply (不 in 不用了, 没 in 没收到, 忙 in 在忙). A logistic regression
over TF-IDF character 1–3-grams of every KB question (label: the intent's name, `out_of_scope` a class like any
other, balanced class weights) reads those characters directly. The matcher adds ``weight × log p(intent)``,
normalised over the candidates the neighbours found, to each candidate's cosine, and that sum is the score the
fallback threshold and the ambiguity margin judge (calibrated with the head on: `callbot model verify`).

Measured on the held-out dev utterances, two-fold cross-fitted thresholds (docs/nlu.md, twenty-fourth session).
It depends on the KB's texts only, not on the encoder, so the fitted head is cached on disk by the texts' hash and
a restart loads it instead of fitting again (≈ 25 s at 8k distinct questions on two cores).

**Sound features** (``sound=True``): besides the characters, the head reads toneless pinyin syllables (1–2-grams),
folded the way southern accents and phone recognisers confuse them (zh/z, ch/c, sh/s, n/l, -ng/-n). A reply written
or heard with a homophone (轻楚 for 清楚, 慢意 for 满意, 收倒 for 收到, 憋打了 for 别打了) shares its sound grams with the
KB's wording even when no character matches.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NGRAMS = (1, 3)
SOUND_NGRAMS = (1, 2)
FORMAT = 2  # bump when the pickled layout changes: older cache files are fitted again
# Accent folds applied to each toneless syllable, in order: initials first, then finals (see the module docstring).
_FOLDS = ((re.compile(r"^([zcs])h"), r"\1"), (re.compile(r"^n(?=[aeiou])"), "l"), (re.compile(r"(?<=[aeiu])ng$"), "n"))
_SPACES = re.compile(r"\s+")


def fold_syllable(syllable: str) -> str:
    """A toneless pinyin syllable as accents blur it: 'zhi' → 'zi', 'neng' → 'len', 'qing' → 'qin'."""
    for pattern, repl in _FOLDS:
        syllable = pattern.sub(repl, syllable)
    return syllable


def sound_syllables(text: str) -> list[str]:
    """The folded pinyin of the Chinese characters in ``text``, in order; other characters break the run ('')."""
    from pypinyin import lazy_pinyin

    out: list[str] = []
    for item in lazy_pinyin(text, errors=lambda chunk: [""] * len(chunk), v_to_u=False):
        out.append(fold_syllable(item) if item else "")
    return out


def char_and_sound_grams(text: str) -> list[str]:
    """Character 1–3-grams (as sklearn's ``analyzer='char'`` makes them) plus '§'-prefixed sound 1–2-grams."""
    doc = _SPACES.sub(" ", text.lower())
    grams = [doc[i:i + n] for n in range(NGRAMS[0], NGRAMS[1] + 1) for i in range(len(doc) - n + 1)]
    syllables = sound_syllables(text)
    for n in range(SOUND_NGRAMS[0], SOUND_NGRAMS[1] + 1):
        for i in range(len(syllables) - n + 1):
            window = syllables[i:i + n]
            if all(window):
                grams.append("§" + "_".join(window))
    return grams


@dataclass(frozen=True)
class LexicalHead:
    classes: tuple[str, ...]
    vectorizer: Any  # sklearn TfidfVectorizer, fitted
    coef: np.ndarray  # (features, classes), float32: one sparse row times this is the logits
    intercept: np.ndarray  # (classes,)

    @classmethod
    def fit(cls, texts: list[str], labels: list[str], c: float = 10.0, sound: bool = False) -> LexicalHead:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError("a lexical head needs at least two intents")
        vectorizer = (TfidfVectorizer(analyzer=char_and_sound_grams, sublinear_tf=True, dtype=np.float32) if sound
                      else TfidfVectorizer(analyzer="char", ngram_range=NGRAMS, sublinear_tf=True, dtype=np.float32))
        x = vectorizer.fit_transform(texts)
        index = {name: i for i, name in enumerate(classes)}
        y = np.fromiter((index[label] for label in labels), dtype=np.int64, count=len(labels))
        model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x, y)
        return cls(tuple(classes), vectorizer, np.ascontiguousarray(model.coef_.T, dtype=np.float32),
                   model.intercept_.astype(np.float32))

    def log_proba(self, text: str, names: list[str]) -> dict[str, float]:
        """Log-probability of each named intent the head knows, normalised over those (an intent added since the
        fit is left out: the caller gives it the least likely one's)."""
        index = {n: i for i, n in enumerate(self.classes)}
        known = [n for n in dict.fromkeys(names) if n in index]
        if not known:
            return {}
        cols = [index[n] for n in known]
        row = self.vectorizer.transform([text])  # sparse: a few dozen n-grams, so only their rows of coef are read
        logits = (np.asarray(row @ self.coef).ravel() + self.intercept)[cols]
        logits = logits - logits.max()
        log_z = np.log(np.exp(logits).sum())
        return {n: float(v - log_z) for n, v in zip(known, logits, strict=True)}


def training_key(texts: list[str], labels: list[str], c: float, sound: bool = False) -> str:
    h = hashlib.sha256(f"{FORMAT}|{NGRAMS}|{c}|{SOUND_NGRAMS if sound else ''}".encode())
    for t, label in sorted(zip(texts, labels, strict=True)):
        h.update(f"{t}\t{label}\n".encode())
    return h.hexdigest()[:16]


def load_or_fit(folder: Path, texts: list[str], labels: list[str], c: float = 10.0, sound: bool = False) -> LexicalHead:
    """The head for these questions: from ``folder`` when fitted before on the same texts, else fitted and saved
    there (replacing older files: one KB version's head is all a restart needs)."""
    key = training_key(texts, labels, c, sound)
    path = folder / f"lexical-head-{key}.pkl"
    if path.is_file():
        try:
            with path.open("rb") as fh:
                head = pickle.load(fh)  # our own cache file, written below
            if isinstance(head, LexicalHead):
                return head
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as exc:
            log.warning("lexical head cache unreadable: fitting again",
                        extra={"fields": {"path": str(path), "error": str(exc)[:200]}})
    head = LexicalHead.fit(texts, labels, c, sound)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        pickle.dump(head, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    for old in folder.glob("lexical-head-*.pkl"):
        if old != path:
            old.unlink(missing_ok=True)
    return head
