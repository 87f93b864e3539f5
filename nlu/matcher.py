"""Scenario-scoped intent matching: cached question vectors in FAISS, max-over-questions intent scores."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np
from sqlalchemy import select

from knowledge_base.db import Store
from knowledge_base.errors import CallbotError, NotFound
from knowledge_base.models import ExtensionQuestion, Intent, ReviewStatus, Scenario
from nlu.intent_head import IntentHead
from nlu.lexical_head import LexicalHead, load_or_fit
from nlu.text import normalise
from nlu.vector_cache import VectorCache

log = logging.getLogger(__name__)
ALL = "*"  # the scope used when no scenario is given: every scenario's dialogue intents plus the FAQ set
FAQ_SCENARIO = "faq"
FALLBACK_INTENT = "nlu_fallback"
# Rasa's domain (bot/domain.yml) names these dialogue intents. Any other dialogue intent is a scenario's own
# question about the call's subject (ask_pay_amount: "how much do I pay?"): Rasa sees it as
# `scenario_question` and the call answers it from the scenario's answer template and variables. Those
# only make sense inside their call, so matching without a scenario leaves them out.
RASA_DIALOGUE_INTENTS = frozenset({"affirm", "deny", "busy", "wrong_person", "ask_identity", "ask_purpose",
                                   "request_human", "complain", "goodbye", "greet", "stop_calling"})
SCENARIO_QUESTION = "scenario_question"
# Chatter no intent should claim (weather, stock tips, a word to someone else in the room), kept in the KB as
# examples like any intent (Rasa's out_of_scope convention). A top match on it is a fallback: the examples let
# the nearest neighbour reject chatter that scores as high as a plain spoken reply, which no threshold can.
OUT_OF_SCOPE = "out_of_scope"


def is_scenario_question(kind: str, intent: str) -> bool:
    return kind == "dialogue" and intent not in RASA_DIALOGUE_INTENTS and intent != OUT_OF_SCOPE


def kind_of(item: IntentScore | QuestionEntry) -> str:
    """dialogue | faq, or out_of_scope for the chatter examples (calibration and the held-out measure treat
    a top match on them as a rejection)."""
    return OUT_OF_SCOPE if item.intent == OUT_OF_SCOPE else item.kind


class Encoder(Protocol):
    name: str

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


@dataclass(frozen=True)
class Thresholds:
    """Decision rule, calibrated per model (nlu calibrate) and stored beside it as thresholds.json."""

    # Defaults are e5-small's calibration on the demo knowledge base (`callbot model verify`, 2026-12-01, fourth session:
    # the enlarged dev split — the earlier test sets plus 317 more chatter lines — and the KB fifth), so a fresh clone
    # serves what was measured.
    fallback: float = 0.930  # top intent score below this: nlu_fallback
    ambiguous_margin: float = 0.005  # top two intents closer than this: ask which one
    temperature: float = 0.005  # softmax temperature turning scores into confidences
    # A call's spoken replies (嗯呐, 在开车呢回头说) score lower against their intents than written FAQ questions
    # do against theirs: a top match on a dialogue intent has its own fallback threshold (None: use `fallback`).
    fallback_dialogue: float | None = 0.922
    # The lexical head's weight the thresholds were calibrated with (nlu.lexical_weight chooses it per model on
    # dev): the head moves every judged score, so a model's thresholds only hold at this weight. 0 = head off.
    lexical_head_weight: float = 0.0
    # The head reads only replies of at least this many characters (letters, digits, Chinese characters; 0 = all).
    # Split 20: on replies of one to four characters the head lost more than it won (会的 / 我是 / 蛮好 went to greet,
    # fallback or deny), while it helped the longer ones. Chosen with the weight on dev (nlu.lexical_weight).
    lexical_min_chars: int = 0
    # The head reads sound grams (folded pinyin) beside the characters: chosen with the weight on dev. Thresholds
    # calibrated before it existed were calibrated without it.
    lexical_sound: bool = False

    def fallback_for(self, kind: str) -> float:
        return self.fallback_dialogue if kind == "dialogue" and self.fallback_dialogue is not None else self.fallback

    @classmethod
    def for_model(cls, model_dir: Path | None) -> Thresholds:
        path = model_dir / "thresholds.json" if model_dir else None
        if path and path.is_file():
            data = json.loads(path.read_text())
            values: dict[str, Any] = {k: float(v) for k, v in data.items() if k in cls.__dataclass_fields__
                                      and isinstance(v, (int, float)) and not isinstance(v, bool)}
            if "lexical_min_chars" in values:
                values["lexical_min_chars"] = int(values["lexical_min_chars"])
            values["lexical_sound"] = data.get("lexical_sound") is True
            values.setdefault("fallback_dialogue", None)  # calibrated without one: not e5-small's default
            return cls(**values)
        if model_dir and (model_dir / "callbot_encoder.json").is_file() \
                and json.loads((model_dir / "callbot_encoder.json").read_text()).get("kind") == "albert-sim":
            log.warning("model has no calibrated thresholds; using e5-small's, which may reject most messages",
                        extra={"fields": {"model": model_dir.name, "fix": f"callbot model verify {model_dir.name}"}})
        return cls()


@dataclass(frozen=True)
class QuestionEntry:
    intent_id: int
    intent: str
    kind: str  # dialogue | faq
    scenario: str
    text: str
    standard_question: str
    is_standard: bool


@dataclass
class _Scope:
    entries: list[QuestionEntry]
    index: faiss.Index


@dataclass
class IntentScore:
    intent_id: int
    intent: str
    kind: str
    scenario: str
    score: float
    question: str
    standard_question: str
    cosine: float | None = None  # the closest question's cosine when the lexical head moved `score` off it

    def as_dict(self) -> dict[str, Any]:
        out = {"intent_id": self.intent_id, "intent": self.intent, "kind": self.kind, "scenario": self.scenario,
               "score": round(self.score, 4), "question": self.question, "standard_question": self.standard_question}
        if self.cosine is not None:
            out["cosine"] = round(self.cosine, 4)
        return out


@dataclass
class MatchResult:
    text: str
    scenario: str | None
    decision: str  # match | ambiguous | fallback
    ranking: list[IntentScore]
    confidences: list[float]
    kb_version: int
    model: str
    latency_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def top(self) -> IntentScore | None:
        return self.ranking[0] if self.ranking else None

    def rasa_intent(self, item: IntentScore | None) -> str:
        if item is None or item.intent == OUT_OF_SCOPE:
            return FALLBACK_INTENT
        if item.kind == "faq":
            return "faq"
        return SCENARIO_QUESTION if is_scenario_question(item.kind, item.intent) else item.intent

    def as_dict(self) -> dict[str, Any]:
        top = self.top
        name = FALLBACK_INTENT if self.decision == "fallback" else self.rasa_intent(top)
        confidence = self.confidences[0] if self.confidences and self.decision != "fallback" else 0.0
        seen: dict[str, float] = {}
        for item, conf in zip(self.ranking, self.confidences, strict=True):
            seen.setdefault(self.rasa_intent(item), conf)
        return {
            "text": self.text, "scenario": self.scenario, "decision": self.decision,
            "intent": {"name": name, "confidence": round(confidence, 4)},
            "intent_ranking": [{"name": n, "confidence": round(c, 4)} for n, c in seen.items()],
            "matched": top.as_dict() if top and self.decision != "fallback" else None,
            "ranking": [r.as_dict() for r in self.ranking],
            "kb_version": self.kb_version, "model": self.model, "latency_ms": round(self.latency_ms, 2), **self.extra,
        }


def cache_key(encoder: Encoder) -> str:
    """Vectors are only valid for the exact weights: the key carries the checkpoint's fingerprint."""
    return getattr(encoder, "cache_id", None) or encoder.name


class Matcher:
    """Keeps FAISS indexes in step with the knowledge base; thread-safe refresh, lock-free reads."""

    def __init__(self, store: Store, encoder: Encoder, cache_dir: Path, thresholds: Thresholds | None = None,
                 exact_index_limit: int = 50_000, refresh_interval_s: float = 0.5,
                 scope_encoders: dict[str, Encoder] | None = None, search_threads: int | None = 1,
                 intent_head_weight: float = 0.0, lexical_head_weight: float = 0.0, lexical_min_chars: int = 0,
                 lexical_sound: bool = False):
        # Threads for each FAISS search (see NluSettings.search_threads for why one); None = leave as is.
        self.search_threads = search_threads
        self.store = store
        self.encoder = encoder
        self.thresholds = thresholds or Thresholds()
        self.exact_index_limit = exact_index_limit
        self.refresh_interval_s = refresh_interval_s
        # A scenario fine-tuned with `callbot model finetune` gets its own encoder for its own scope.
        self.scope_encoders = scope_encoders or {}
        self.scope_thresholds: dict[str, Thresholds] = {
            name: Thresholds.for_model(Path(enc.path)) for name, enc in self.scope_encoders.items() if hasattr(enc, "path")
        }
        self.cache_dir = cache_dir
        self.caches: dict[str, VectorCache] = {}
        self._scopes: dict[str, _Scope] = {}
        self._scenario_faq: dict[str, bool] = {}
        self._version: int | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self.last_refresh: dict[str, Any] = {}
        # Orders candidates by cosine + weight × log p(intent) of a linear head (nlu.intent_head); 0 = off.
        self.intent_head_weight = intent_head_weight
        self._head: tuple[int, IntentHead] | None = None  # (KB version it was fitted on, head)
        # Adds weight × log p(intent) of a character n-gram classifier (nlu.lexical_head) to each candidate's
        # cosine; the sum is the score the thresholds judge. 0 = off.
        self.lexical_head_weight = lexical_head_weight
        self.lexical_min_chars = lexical_min_chars  # shorter replies are judged on their cosine alone (Thresholds)
        self.lexical_sound = lexical_sound  # the head reads folded pinyin too (Thresholds)
        self._lexical: tuple[int, LexicalHead] | None = None
        self.head_ready = threading.Event()

    # -- keeping up with the knowledge base -------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """Rebuild indexes if the KB version moved; only new/edited texts are encoded. Returns True if rebuilt."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.refresh_interval_s and self._version is not None:
            return False
        self._checked_at = now
        version = self.store.kb_version()
        if version == self._version and not force:
            return False
        with self._lock:
            if version == self._version and not force:
                return False
            started = time.monotonic()
            entries, faq_flags = self._load_entries()
            scopes: dict[str, list[QuestionEntry]] = {}
            for e in entries:
                scopes.setdefault(e.scenario, []).append(e)
            scopes[ALL] = [e for e in entries if (e.kind == "dialogue" and not is_scenario_question(e.kind, e.intent))
                           or e.scenario == FAQ_SCENARIO]
            # A scenario with its own encoder needs the FAQ set in that encoder's space too: scores from
            # two encoders are not comparable.
            for scenario in self.scope_encoders:
                if faq_flags.get(scenario) and FAQ_SCENARIO in scopes:
                    scopes[f"{FAQ_SCENARIO}@{scenario}"] = scopes[FAQ_SCENARIO]
            by_encoder: dict[str, list[str]] = {}
            for name, es in scopes.items():
                by_encoder.setdefault(cache_key(self.encoder_for(name)), []).extend(e.text for e in es)
            encoded = 0
            for name, es in scopes.items():
                enc = self.encoder_for(name)
                cache = self._cache(enc)
                missing = cache.missing([e.text for e in es])
                if missing:
                    cache.add(missing, enc.encode(missing, progress=len(missing) > 500))
                    encoded += len(missing)
            self._scopes = {name: _Scope(es, self._build_index(self._cache(self.encoder_for(name)).matrix([e.text for e in es])))
                            for name, es in scopes.items()}
            self._scenario_faq = faq_flags
            self._version = version
            for enc_name, texts in by_encoder.items():
                cache = self.caches[enc_name]
                if encoded or cache.kb_version != version:
                    cache.save(version, texts)
            self.last_refresh = {"kb_version": version, "questions": len(entries), "encoded": encoded,
                                 "seconds": round(time.monotonic() - started, 3),
                                 "scope_encoders": {k: v.name for k, v in self.scope_encoders.items()}}
            log.info("NLU index rebuilt", extra={"fields": self.last_refresh})
            if self.intent_head_weight > 0 or self.lexical_head_weight > 0:
                self._start_head_fit(version, scopes)
            return True

    def head_training_set(self, scopes: dict[str, list[QuestionEntry]] | None = None) -> tuple[list[str], list[str]]:
        """(question texts, intent names) the heads learn from: every question the main encoder serves, once."""
        seen: dict[str, str] = {}
        for name, es in (scopes if scopes is not None else {k: v.entries for k, v in self._scopes.items()}).items():
            if "@" in name or name in self.scope_encoders:
                continue
            for e in es:
                seen.setdefault(e.text, e.intent)
        return list(seen), list(seen.values())

    def _start_head_fit(self, version: int, scopes: dict[str, list[QuestionEntry]]) -> None:
        """Fit the heads on every question the main encoder serves, in the background. Until the intent head is
        done the matcher orders by the neighbours alone (a stale head would not know an intent added since); the
        lexical head's scores are what the thresholds were calibrated on, so the first one is fitted (or loaded
        from its cache) before the matcher serves, and later a stale one serves until the new one is ready."""
        self.head_ready.clear()
        texts, labels = self.head_training_set(scopes)
        cache = self._cache(self.encoder)
        vectors = cache.matrix(texts)
        if self.lexical_head_weight > 0 and self._lexical is None:
            try:
                self._lexical = (version, load_or_fit(self.cache_dir / "lexical", texts, labels, sound=self.lexical_sound))
            except ValueError as exc:
                log.warning("lexical head not fitted", extra={"fields": {"reason": str(exc)}})

        def fit() -> None:
            started = time.monotonic()
            try:
                if self.lexical_head_weight > 0 and (self._lexical is None or self._lexical[0] != version):
                    lexical = load_or_fit(self.cache_dir / "lexical", texts, labels, sound=self.lexical_sound)
                    if self._version == version:
                        self._lexical = (version, lexical)
                if self.intent_head_weight > 0:
                    head = IntentHead.fit(vectors, labels)
                    if self._version == version:
                        self._head = (version, head)
            except ValueError as exc:  # one intent only: nothing to tell apart
                log.warning("intent heads not fitted", extra={"fields": {"reason": str(exc)}})
            else:
                log.info("intent heads fitted", extra={"fields": {"kb_version": version, "questions": len(texts),
                                                                  "seconds": round(time.monotonic() - started, 1)}})
            finally:
                if self._version == version:
                    self.head_ready.set()

        threading.Thread(target=fit, name="intent-head-fit", daemon=True).start()

    def wait_for_intent_head(self, timeout_s: float = 1800.0) -> None:
        """Block until the intent head of the current KB version is fitted (no-op when the head is off); for
        measuring, where ranking without the head would measure something else than what is served."""
        if (self.intent_head_weight > 0 or self.lexical_head_weight > 0) and not self.head_ready.wait(timeout_s):
            raise CallbotError(f"the intent heads did not finish fitting within {timeout_s:.0f} s; set "
                               "nlu.intent_head_weight and nlu.lexical_head_weight to 0 to measure without them")

    def encoder_for(self, scope: str) -> Encoder:
        owner = scope.split("@", 1)[1] if "@" in scope else scope
        return self.scope_encoders.get(owner, self.encoder)

    def thresholds_for(self, scenario: str | None) -> Thresholds:
        return self.scope_thresholds.get(scenario or "", self.thresholds)

    def _cache(self, encoder: Encoder) -> VectorCache:
        key = cache_key(encoder)
        if key not in self.caches:
            self.caches[key] = VectorCache(self.cache_dir, key, encoder.dim)
        return self.caches[key]

    @property
    def cache(self) -> VectorCache:
        return self._cache(self.encoder)

    def _load_entries(self) -> tuple[list[QuestionEntry], dict[str, bool]]:
        with self.store.session() as s:
            scenarios = {sc.id: sc for sc in s.scalars(select(Scenario).where(Scenario.live()))}
            intents = {it.id: it for it in s.scalars(select(Intent).where(Intent.scenario_id.in_(list(scenarios))))}
            entries: list[QuestionEntry] = []
            for it in intents.values():
                sc = scenarios[it.scenario_id]
                entries.append(QuestionEntry(it.id, it.name, it.kind.value, sc.code, it.standard_question, it.standard_question, True))
            rows = s.execute(select(ExtensionQuestion.intent_id, ExtensionQuestion.text).where(ExtensionQuestion.status == ReviewStatus.approved))
            for intent_id, text in rows:
                it = intents.get(intent_id)
                if it is None:  # an intent of a deleted scenario
                    continue
                entries.append(QuestionEntry(it.id, it.name, it.kind.value, scenarios[it.scenario_id].code, text, it.standard_question, False))
            return entries, {sc.code: sc.include_faq for sc in scenarios.values()}

    def _build_index(self, vectors: np.ndarray) -> faiss.Index:
        dim = self.encoder.dim
        if len(vectors) > self.exact_index_limit:
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 128
        else:
            index = faiss.IndexFlatIP(dim)
        if len(vectors):
            index.add(vectors)
        return index

    # -- matching ------------------------------------------------------------------------------
    @property
    def kb_version(self) -> int:
        return self._version if self._version is not None else -1

    def scenarios(self) -> list[str]:
        return sorted(k for k in self._scopes if k != ALL and "@" not in k)

    def match(self, text: str, scenario: str | None = None, k: int = 5) -> MatchResult:
        started = time.perf_counter()
        self.refresh()
        clean = normalise(text)
        scope_names = self._scope_names(scenario)
        ranking = self._rank(clean, scope_names, k)
        result = self._decide(clean, scenario, ranking)
        result.latency_ms = (time.perf_counter() - started) * 1000
        if clean != text.strip():
            result.extra["normalised_text"] = clean
        return result

    def _scope_names(self, scenario: str | None) -> list[str]:
        if not scenario:
            return [ALL]
        if scenario not in self._scopes and scenario not in self._scenario_faq:
            known = ", ".join(self.scenarios()) or "(none)"
            raise NotFound(f"Unknown scenario {scenario!r}. Known scenarios: {known}.")
        names = [scenario] if scenario in self._scopes else []
        if self._scenario_faq.get(scenario) and scenario != FAQ_SCENARIO and FAQ_SCENARIO in self._scopes:
            own_faq = f"{FAQ_SCENARIO}@{scenario}"
            names.append(own_faq if own_faq in self._scopes else FAQ_SCENARIO)
        return names

    def _rank(self, text: str, scope_names: list[str], k: int) -> list[IntentScore]:
        best: dict[tuple[str, str], IntentScore] = {}
        queries: dict[str, np.ndarray] = {}
        for position, name in enumerate(scope_names):
            scope = self._scopes[name]
            if not scope.entries:
                continue
            secondary = position > 0  # the shared FAQ set seen from an outbound scenario: its FAQs only
            enc = self.encoder_for(name)
            if enc.name not in queries:
                queries[enc.name] = enc.encode([text])[0]
            query = queries[enc.name]
            n = min(len(scope.entries), max(64, k * 16))  # enough neighbours to cover k distinct intents
            scores, idx = self._search(scope.index, query, n)
            for score, i in zip(scores[0], idx[0], strict=True):
                if i < 0:
                    continue
                e = scope.entries[i]
                if secondary and e.kind == "dialogue":
                    continue
                # Dialogue intents with one name (affirm in every scenario) merge when matching across scenarios.
                key = (e.intent, "") if name == ALL and e.kind == "dialogue" else (e.intent, e.scenario)
                if key not in best or score > best[key].score:
                    best[key] = IntentScore(e.intent_id, e.intent, e.kind, e.scenario, float(score), e.text, e.standard_question)
        own_encoder = any(n in self.scope_encoders for n in scope_names)  # a fine-tuned scenario model: its calibration
        # A reply that is word for word a KB question is that question's intent: staff wrote it there. The heads are
        # for wordings the KB lacks; left on, a one-character reply (好, an affirm wording) went to greet (你好).
        # (A wording's own vector scores ≈ 1; only those candidates pay for normalising their text.)
        if any(r.score >= 0.98 and (r.question == text or normalise(r.question) == text) for r in best.values()):
            return sorted(best.values(), key=lambda r: -r.score)[:k]
        if not own_encoder and best and self.lexical_reads(text):
            bonus = self.lexical_bonus(text, [r.intent for r in best.values()])
            if bonus:
                best = {key: replace(r, score=r.score + bonus[r.intent], cosine=r.score) for key, r in best.items()}
        head = self._head
        main = self.encoder.name
        if head is not None and head[0] == self._version and main in queries and not own_encoder:
            lp = head[1].log_proba(queries[main], [r.intent for r in best.values()])
            floor = min(lp.values(), default=0.0)  # an intent the head does not know yet ranks as its least likely
            return sorted(best.values(), key=lambda r: -(r.score + self.intent_head_weight * lp.get(r.intent, floor)))[:k]
        return sorted(best.values(), key=lambda r: -r.score)[:k]

    def lexical_reads(self, text: str) -> bool:
        """Whether the lexical head judges ``text``: long enough (``lexical_min_chars``, punctuation not counted)."""
        return self.lexical_min_chars <= 0 or sum(1 for c in text if c.isalnum()) >= self.lexical_min_chars

    def lexical_bonus(self, text: str, intents: list[str], head: LexicalHead | None = None) -> dict[str, float]:
        """weight × log p(intent | characters) for each of ``intents`` (normalised over them; an intent the head
        does not know gets the least likely one's), or {} with the head off or not fitted yet. A head fitted on the
        previous KB version serves while the new one is fitted: it still knows every older intent."""
        if head is None:
            if self.lexical_head_weight <= 0 or self._lexical is None:
                return {}
            head = self._lexical[1]
        lp = head.log_proba(text, intents)
        floor = min(lp.values(), default=0.0)
        return {name: self.lexical_head_weight * lp.get(name, floor) for name in intents}

    def _search(self, index: faiss.Index, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Search with ``search_threads`` OpenMP threads, then restore the count. OpenMP thread counts are
        per calling thread, and depending on load order FAISS may share torch's libgomp: restoring keeps
        torch's encoding on its own thread count, setting it here reaches whichever thread searches."""
        if not self.search_threads:
            return index.search(query[None, :].astype(np.float32), n)
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.search_threads)
        try:
            return index.search(query[None, :].astype(np.float32), n)
        finally:
            faiss.omp_set_num_threads(before)

    def _decide(self, text: str, scenario: str | None, ranking: list[IntentScore]) -> MatchResult:
        t = self.thresholds_for(scenario)
        if ranking:
            scores = np.array([r.score for r in ranking])
            exp = np.exp((scores - scores.max()) / t.temperature)
            confidences = (exp / exp.sum()).tolist()
        else:
            confidences = []
        runner_up = next((r for r in ranking[1:] if r.intent != OUT_OF_SCOPE), None)  # never a button
        extra: dict[str, Any] = {}
        if not any(c.isalnum() for c in text):
            # Emoji, punctuation, symbols only (😀😀😀, ？？？, ...): no word to understand. Their vectors sit near the
            # KB's one-character wordings (系, 恁好), which once matched them as affirm or greet.
            decision = "fallback"
            extra["no_words"] = True
        elif ranking and ranking[0].intent == OUT_OF_SCOPE:
            decision = "fallback"
            extra["out_of_scope"] = True
        elif not ranking or ranking[0].score < t.fallback_for(ranking[0].kind):
            decision = "fallback"
        # abs: with the intent head on, the top intent may have the lower cosine; close cosines still mean a close call.
        elif runner_up is not None and abs(ranking[0].score - runner_up.score) < t.ambiguous_margin:
            decision = "ambiguous"
        else:
            decision = "match"
        return MatchResult(text, scenario, decision, ranking, confidences, self.kb_version,
                           self.encoder_for(scenario or ALL).name, extra=extra)
