"""`ComplianceGuard`: one interface for every place wording matters (bot replies, KB answers, transcripts, CLI).

For each sentence of a text (nlu/compliance/clauses.py):
1. the lexicon's hits (rule, span) are found;
2. the classifier gives P(violation) and the most likely class;
3. the decision:
   - lexicon hit and P(violation) at least ``override_below`` → the lexicon's hit (its rule, its exact span);
   - lexicon hit but the classifier is sure it is compliant (P < ``override_below``: a negation, warning, quotation
     or customer question such as "这只基金不承诺保本") and the sentence has a cue of such a mention outside the
     matched words (nlu.compliance.mention) → no violation; the overruled rule is kept in ``overruled``;
   - no lexicon hit and P(violation) ≥ the head's cross-validated threshold → a hit of the class's semantic rule
     (knowledge-base rule with ``match_type: semantic``) spanning the sentence. It takes the rule's severity only
     when P ≥ ``block_confidence``; below that its severity is ``review``: logged and flagged for staff, not
     blocked. A vetted knowledge-base answer that the classifier merely doubts must not turn into a safe line;
     the lexicon's rules and confident findings block;
   - the most likely class ``question`` → tagged ``customer_question`` (not a violation).
Without a trained head (`callbot compliance train`) the guard is the lexicon alone, and says so once in the log.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from knowledge_base.db import Store
from nlu.compliance.classifier import CLASSES, VIOLATION, TrainedHead, load_head
from nlu.compliance.clauses import split_clauses
from nlu.compliance.lexicon import Hit, RuleLexicon
from nlu.compliance.mention import mention_cue

log = logging.getLogger(__name__)
MAX_CHARS = 20_000  # longer texts are checked in their first MAX_CHARS characters, and the verdict says so


@dataclass
class Verdict:
    text: str
    hits: list[Hit] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    overruled: list[str] = field(default_factory=list)  # lexicon rules the classifier judged compliant in context
    truncated: bool = False

    @property
    def violation(self) -> bool:
        return bool(self.hits)

    def blocking(self) -> list[Hit]:
        return [h for h in self.hits if h.severity == "block"]

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "violation": self.violation,
                "hits": [{"rule": h.rule_id, "name": h.description, "severity": h.severity, "start": h.start, "end": h.end,
                          "matched": h.matched, "score": round(h.score, 4), "source": h.source} for h in self.hits],
                "tags": self.tags, **({"overruled": self.overruled} if self.overruled else {}),
                **({"truncated": True} if self.truncated else {})}


SCORE_CACHE_SIZE = 4096  # sentences; a bot's script and FAQ answers fit many times over


class ComplianceGuard:
    def __init__(self, store: Store, encoder: Any | None = None, head_dir: Path | None = None,
                 override_below: float | None = None, block_confidence: float = 0.9):
        self.lexicon = RuleLexicon(store)
        self.encoder = encoder
        self.head: TrainedHead | None = None
        self.override_below = 0.15 if override_below is None else override_below
        self.block_confidence = block_confidence
        self._lock = threading.Lock()
        self._scores: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()
        if encoder is not None and head_dir is not None:
            self.head = load_head(head_dir, encoder.dim, getattr(encoder, "cache_id", None))
            if self.head is not None and override_below is None:  # chosen with the threshold in cross-validation
                self.override_below = float(self.head.meta.get("override_below", self.override_below))
            if self.head is None:
                log.warning("no trained compliance classifier; the guard uses the rule lexicon alone "
                            "(`callbot compliance train` builds one)", extra={"fields": {"dir": str(head_dir)}})

    @property
    def uses_classifier(self) -> bool:
        return self.head is not None

    def verdicts(self, texts: list[str], lexicon: RuleLexicon | None = None) -> list[Verdict]:
        """One verdict per text, in order; all sentences of all texts are encoded in one batch. ``lexicon``: other
        rules than the store's (an import's own transaction)."""
        lexicon = lexicon or self.lexicon
        lexicon.refresh()  # once for the batch; each sentence is scanned without asking the database again
        prepared = []
        for text in texts:
            text = text if isinstance(text, str) else str(text)
            truncated = len(text) > MAX_CHARS
            body = text[:MAX_CHARS]
            prepared.append((text, truncated, split_clauses(body)))
        units = [c for _t, _tr, clauses in prepared for c in clauses]
        probs, p_violation = self._proba([c.text for c in units]) if self.head is not None and units else (None, None)
        out, k = [], 0
        for text, truncated, clauses in prepared:
            verdict = Verdict(text, truncated=truncated)
            for clause in clauses:
                p = (probs[k], float(p_violation[k])) if probs is not None and p_violation is not None else None
                k += 1
                self._judge(verdict, clause.text, clause.start, p, lexicon)
            out.append(verdict)
        return out

    def verdict(self, text: str) -> Verdict:
        return self.verdicts([text])[0]

    # The action and older callers ask for a list of hits.
    def check(self, text: str) -> list[Hit]:
        return self.verdict(text).hits

    def blocks(self, text: str) -> list[Hit]:
        return self.verdict(text).blocking()

    def _proba(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and violation probability per sentence. Bot lines repeat (script prompts, FAQ
        answers: 13–16 ms each to encode), and the head and encoder are fixed for this guard's life, so a sentence
        is scored once and remembered (the lexicon, which staff edit, is still applied on every call)."""
        assert self.head is not None and self.encoder is not None
        with self._lock:  # one encoder, several threads (the web app's executor, the action server)
            missing = list(dict.fromkeys(s for s in sentences if s not in self._scores))
            if missing:
                vectors = self.encoder.encode(missing).astype(np.float32)
                probs, p_violation = self.head.score(vectors, missing)
                for s, p, v in zip(missing, probs, p_violation, strict=True):
                    self._scores[s] = (p, float(v))
            for s in sentences:
                self._scores.move_to_end(s)
            rows = [self._scores[s] for s in sentences]
            while len(self._scores) > SCORE_CACHE_SIZE:
                self._scores.popitem(last=False)
        return np.stack([p for p, _ in rows]), np.array([v for _, v in rows], dtype=np.float64)

    def _judge(self, verdict: Verdict, sentence: str, offset: int, scored: tuple[np.ndarray, float] | None,
               lexicon: RuleLexicon) -> None:
        lexical = lexicon.scan(sentence, refresh=False)
        if scored is None:  # lexicon only
            verdict.hits += [_shift(h, offset) for h in lexical]
            return
        assert self.head is not None
        p, p_violation = scored
        best = CLASSES[int(p.argmax())]
        if lexical:
            if p_violation < self.override_below and mention_cue(sentence, [(h.start, h.end) for h in lexical]):
                verdict.overruled += [h.rule_id for h in lexical]
            else:
                verdict.hits += [_shift(h, offset, score=p_violation) for h in lexical]
                return
        elif p_violation >= self.head.threshold:
            cls = max(VIOLATION, key=lambda c: p[CLASSES.index(c)])
            rule = lexicon.semantic.get(cls)
            if rule is not None:  # a disabled semantic rule switches its class off
                severity = rule.severity if p_violation >= self.block_confidence else "review"
                verdict.hits.append(Hit(rule.rule_id, severity, sentence, rule.description, rule.legal_basis,
                                        offset, offset + len(sentence), p_violation, "classifier"))
                return
        if best == "question" and "customer_question" not in verdict.tags:
            verdict.tags.append("customer_question")


def _shift(hit: Hit, offset: int, score: float | None = None) -> Hit:
    return Hit(hit.rule_id, hit.severity, hit.matched, hit.description, hit.legal_basis, hit.start + offset, hit.end + offset,
               hit.score if score is None else score, hit.source)
