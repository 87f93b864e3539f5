"""`ComplianceGuard`: one interface for every place wording matters (bot replies, KB answers, transcripts, CLI).

For each sentence of a text (nlu/compliance/clauses.py):
1. the lexicon's hits (rule, span) are found;
2. the classifier gives P(violation) and the most likely class;
3. the decision:
   - lexicon hit and P(violation) at least ``override_below`` → the lexicon's hit (its rule, its exact span); when
     every such hit only warns (a rule staff rated ``warn`` because its words also occur in fair talk, such as 翻番
     or 赶紧) and the classifier is confident (P ≥ ``block_confidence``), the class's semantic rule is added with
     its severity: "这只票下周一定翻番" is blocked, not sent with a warning;
   - lexicon hit but the classifier is sure it is compliant (P < ``override_below``: a negation, warning, quotation
     or customer question such as "这只基金不承诺保本") and the sentence has a cue of such a mention outside the
     matched words (nlu.compliance.mention) → no violation; the overruled rule is kept in ``overruled``;
   - no lexicon hit and P(violation) ≥ the head's cross-validated threshold → a hit of the class's semantic rule
     (knowledge-base rule with ``match_type: semantic``) spanning the sentence. It takes the rule's severity only
     when P ≥ ``block_confidence``; below that its severity is ``review``: logged and flagged for staff, not
     blocked. A vetted knowledge-base answer that the classifier merely doubts must not turn into a safe line;
     the lexicon's rules and confident findings block;
   - the most likely class ``question`` → tagged ``customer_question`` (not a violation).
4. the speaker, where the product knows it: a customer's words are never the firm's violation. What would have been
   a hit is kept as a ``mention`` and the verdict is tagged ``customer_mention`` (a question about loss, a promise the
   customer retells: 客户经理当时跟我说保本 — evidence for a complaint, worth a look by staff, but not blocked or blamed).
   Bot replies, knowledge-base texts and agents' lines are the firm's; transcripts know each turn's side.
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
from nlu.compliance.classifier import CLASSES, VIOLATION, TrainedHead, classifier_text, load_head
from nlu.compliance.clauses import split_clauses
from nlu.compliance.lexicon import Hit, RuleLexicon
from nlu.compliance.mention import mention_cue

log = logging.getLogger(__name__)
# The classifier judges a text's first MAX_CHARS characters; the lexicon scans all of it. A longer text's verdict
# says ``truncated`` (the rest was checked by the rules alone).
MAX_CHARS = 20_000


@dataclass
class Verdict:
    text: str
    hits: list[Hit] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    overruled: list[str] = field(default_factory=list)  # lexicon rules the classifier judged compliant in context
    truncated: bool = False
    speaker: str | None = None  # who said it, when the caller knows: customer | agent | bot | notice …
    mentions: list[Hit] = field(default_factory=list)  # a customer's words that would be a violation from the firm

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
                **({"truncated": True} if self.truncated else {}),
                **({"speaker": self.speaker} if self.speaker else {}),
                **({"mentions": [{"rule": h.rule_id, "name": h.description, "start": h.start, "end": h.end,
                                  "matched": h.matched, "score": round(h.score, 4)} for h in self.mentions]}
                   if self.mentions else {})}


# Speakers whose words are never the firm's violation (the transcripts' "user" is the customer).
CUSTOMER_SPEAKERS = frozenset({"customer", "user", "caller", "客户"})

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

    def verdicts(self, texts: list[str], lexicon: RuleLexicon | None = None,
                 speakers: list[str | None] | None = None) -> list[Verdict]:
        """One verdict per text, in order; all sentences of all texts are encoded in one batch. ``lexicon``: other
        rules than the store's (an import's own transaction). ``speakers``: who said each text, where known (a
        customer's words are tagged, never the firm's violation); None = the firm's."""
        if speakers is not None and len(speakers) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(speakers)} speakers")
        lexicon = lexicon or self.lexicon
        lexicon.refresh()  # once for the batch; each sentence is scanned without asking the database again
        prepared = []
        for text in texts:
            text = text if isinstance(text, str) else str(text)
            prepared.append((text, len(text) > MAX_CHARS, split_clauses(text)))
        units = [c for _t, _tr, clauses in prepared for c in clauses if c.start < MAX_CHARS]
        probs, p_violation = self._proba([c.text for c in units]) if self.head is not None and units else (None, None)
        out, k = [], 0
        for text, truncated, clauses in prepared:
            verdict = Verdict(text, truncated=truncated)
            for clause in clauses:
                p = None
                if probs is not None and p_violation is not None and clause.start < MAX_CHARS:
                    p = (probs[k], float(p_violation[k]))
                    k += 1
                self._judge(verdict, clause.text, clause.start, p, lexicon)
            # Long sentences are scanned in overlapping windows: a phrase inside the overlap is one hit, not two.
            unique: dict[tuple[str, int, int], Hit] = {}
            for h in verdict.hits:
                unique.setdefault((h.rule_id, h.start, h.end), h)
            verdict.hits = list(unique.values())
            speaker = speakers[len(out)] if speakers is not None else None
            if speaker:
                verdict.speaker = speaker
                if speaker in CUSTOMER_SPEAKERS and verdict.hits:
                    verdict.mentions, verdict.hits = verdict.hits, []
                    verdict.tags.append("customer_mention")
            out.append(verdict)
        return out

    def verdict(self, text: str, speaker: str | None = None) -> Verdict:
        return self.verdicts([text], speakers=[speaker])[0]

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
                read = [classifier_text(s) for s in missing]
                vectors = self.encoder.encode(read).astype(np.float32)
                probs, p_violation = self.head.score(vectors, read)
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
                if all(h.severity != "block" for h in lexical) and p_violation >= max(self.head.threshold, self.block_confidence):
                    self._semantic_hit(verdict, sentence, offset, p, p_violation, lexicon)
                return
        elif p_violation >= self.head.threshold and self._semantic_hit(verdict, sentence, offset, p, p_violation, lexicon):
            return
        if best == "question" and "customer_question" not in verdict.tags:
            verdict.tags.append("customer_question")


    def _semantic_hit(self, verdict: Verdict, sentence: str, offset: int, p: np.ndarray, p_violation: float,
                      lexicon: RuleLexicon) -> bool:
        """The hit of the most likely violation class's semantic rule over the whole sentence; False when that rule
        is disabled (staff switch a class off by disabling its rule)."""
        cls = max(VIOLATION, key=lambda c: p[CLASSES.index(c)])
        rule = lexicon.semantic.get(cls)
        if rule is None:
            return False
        severity = rule.severity if p_violation >= self.block_confidence else "review"
        verdict.hits.append(Hit(rule.rule_id, severity, sentence, rule.description, rule.legal_basis,
                                offset, offset + len(sentence), p_violation, "classifier"))
        return True


def _shift(hit: Hit, offset: int, score: float | None = None) -> Hit:
    return Hit(hit.rule_id, hit.severity, hit.matched, hit.description, hit.legal_basis, hit.start + offset, hit.end + offset,
               hit.score if score is None else score, hit.source)
