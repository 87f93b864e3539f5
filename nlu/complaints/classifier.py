"""A trained complaint model on disk, and classifying complaints with it.

A model directory holds ``complaint_model.json`` (labels with their training counts, the threshold, the config,
validation figures), ``complaint_model.pt`` (the network without its frozen word vectors) and ``words.npz`` (the
word vectors, float16) — or, for the e5 encoder, the name of the encoder to load from the model cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from knowledge_base.errors import CallbotError
from nlu.complaints.data import MAX_CHARS, Complaint, LabelSet, truncate
from nlu.complaints.features import Featurizer, StateFeaturizer, WordFeaturizer
from nlu.complaints.metrics import multilabel_report
from nlu.complaints.train import TrainConfig, decide, fit, one_thread, predict
from nlu.complaints.words import WordVectors

META, WEIGHTS, WORDS = "complaint_model.json", "complaint_model.pt", "words.npz"
FORMAT = 1


def training_sha1(complaints: list[Complaint]) -> str:
    return hashlib.sha1("\n".join(f"{c.text}\t{'|'.join(c.labels)}" for c in complaints).encode()).hexdigest()


class ModelMissing(CallbotError):
    pass


@dataclass
class ScoredLabel:
    label: str
    score: float


@dataclass
class ClassifiedComplaint:
    text: str
    labels: list[ScoredLabel]
    truncated: bool = False  # longer than MAX_CHARS: its opening and close were classified
    tentative: bool = False  # no label reached the threshold; the best one is given anyway

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "labels": [{"label": s.label, "score": round(s.score, 4)} for s in self.labels]}
        if self.truncated:
            out["truncated"] = f"classified the first and last parts of {len(self.text)} characters (limit {MAX_CHARS})"
        if self.tentative:
            out["tentative"] = True
        return out


class ComplaintModel:
    def __init__(self, net: Any, labels: LabelSet, threshold: float, featurizer: Featurizer, meta: dict[str, Any]):
        self.net, self.labels, self.threshold, self.featurizer, self.meta = net, labels, threshold, featurizer, meta

    # -- building --
    @classmethod
    def train(cls, complaints: list[Complaint], cfg: TrainConfig, cache_dir: Path, encoder: Any = None,
              progress: bool = True, source: str = "", state_memo: dict[str, np.ndarray] | None = None) -> ComplaintModel:
        featurizer: Featurizer
        if cfg.encoder == "gru":
            featurizer = WordFeaturizer(cache_dir / "complaints", cfg.word_dim, cfg.max_tokens, corpus_limit=cfg.word_corpus)
        elif cfg.encoder == "e5":
            if encoder is None:
                raise CallbotError("The e5 encoder variant needs e5-small in the model cache: run `callbot model base`.")
            featurizer = StateFeaturizer(encoder, cfg.max_tokens, state_memo)
        else:
            raise CallbotError(f"Unknown encoder {cfg.encoder!r}; use gru or e5.")
        result = fit(complaints, cfg, featurizer, progress=progress)
        meta = {"format": FORMAT, "name": cfg.name(), "labels": list(result["labels"].codes),
                "train_counts": list(result["labels"].counts), "threshold": result["threshold"],
                "featurizer": featurizer.kind, "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "training_file": source, "training_examples": len(complaints),
                "training_sha1": training_sha1(complaints),
                **result["info"]}
        return cls(result["net"], result["labels"], result["threshold"], featurizer, meta)

    def save(self, directory: Path) -> Path:
        import torch

        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v for k, v in self.net.state_dict().items() if not k.startswith("embed.")}
        torch.save(state, directory / WEIGHTS)
        if isinstance(self.featurizer, WordFeaturizer) and self.featurizer.vectors is not None:
            self.featurizer.vectors.save(directory / WORDS)
        (directory / META).write_text(json.dumps(self.meta, ensure_ascii=False, indent=1), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Path, encoder_loader: Any = None) -> ComplaintModel:
        import torch

        from nlu.complaints.model import FMLCNet

        if not (directory / META).is_file():
            raise ModelMissing(f"No complaint model in {directory}: train one with `callbot complaint train`.")
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ModelMissing(f"The complaint model in {directory} has an old format; retrain it with `callbot complaint train --force`.")
        cfg = TrainConfig(**meta["config"])
        labels = LabelSet(tuple(meta["labels"]), tuple(meta["train_counts"]))
        state = torch.load(directory / WEIGHTS, weights_only=True)
        featurizer: Featurizer
        if cfg.encoder == "gru":
            featurizer = WordFeaturizer(directory, cfg.word_dim, cfg.max_tokens, WordVectors.load(directory / WORDS))
        else:
            if encoder_loader is None:
                raise ModelMissing(f"The complaint model in {directory} reads {meta['featurizer']} token states; that encoder is not available.")
            featurizer = StateFeaturizer(encoder_loader(), cfg.max_tokens)
        net = FMLCNet(len(labels), state["adj"].numpy(), encoder=featurizer.network_encoder, embeddings=featurizer.embeddings(),
                      input_dim=featurizer.dim, hidden=cfg.hidden, graph_dim=cfg.graph_dim)
        net.load_state_dict(state, strict=False)
        net.eval()
        return cls(net, labels, float(meta["threshold"]), featurizer, meta)

    # -- using --
    def probabilities(self, texts: list[str]) -> np.ndarray:
        with one_thread():
            return predict(self.net, self.featurizer.features([truncate(t)[0] for t in texts]))

    def classify(self, texts: list[str]) -> list[ClassifiedComplaint]:
        out = []
        if not texts:
            return out
        probs = self.probabilities([t if t.strip() else "" for t in texts])
        chosen = decide(probs, self.threshold)
        for text, row, pick in zip(texts, probs, chosen, strict=True):
            if not text.strip():
                out.append(ClassifiedComplaint(text, []))  # nothing said: nothing to label
                continue
            labels = sorted((ScoredLabel(self.labels.codes[j], float(row[j])) for j in np.flatnonzero(pick)), key=lambda s: -s.score)
            out.append(ClassifiedComplaint(text, labels, truncated=len(text) > MAX_CHARS,
                                           tentative=bool(labels) and labels[0].score < self.threshold))
        return out

    def evaluate(self, complaints: list[Complaint]) -> dict[str, Any]:
        """Scores on a labelled file. Labels the model does not know are reported and count as misses."""
        y, unknown = self.labels.matrix(complaints)
        started = time.perf_counter()
        probs = self.probabilities([c.text for c in complaints])
        ms = (time.perf_counter() - started) * 1000 / max(1, len(complaints))
        report = multilabel_report(y, decide(probs, self.threshold), list(self.labels.codes), list(self.labels.counts))
        missed = sum(unknown.values())
        if missed:
            report["unknown_labels"] = dict(unknown)
            report["note"] = (f"{missed} gold label(s) of {len(unknown)} kind(s) are not among the model's "
                              f"{len(self.labels)} labels; they are left out of the scores (the model cannot predict them).")
        report.update(model=self.meta.get("name"), threshold=self.threshold, batch_ms_per_complaint=round(ms, 2))
        return report
