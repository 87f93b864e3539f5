"""Fitting the FMLC network on a complaint file.

Two runs, because 1,500 complaints are too few to set 10 % aside for good: the first trains on 90 % and watches the
other 10 % after every epoch (early stopping; the decision threshold is chosen there), the second trains on
everything for the epoch count the first found best. Nothing of a held-out test file is seen by either.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlu.complaints import graph as label_graph
from nlu.complaints.data import Complaint, LabelSet, truncate
from nlu.complaints.features import Featurizer, pad
from nlu.complaints.metrics import multilabel_report

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    loss: str = "asl"  # asl | bce
    graph: bool = True  # False: identity adjacency (the ablation)
    encoder: str = "gru"  # gru: word2vec + BiGRU; e5: e5-small token states
    epochs: int = 40  # at most; early stopping picks fewer
    patience: int = 6
    lr: float = 1e-3
    batch_size: int = 32
    hidden: int = 150  # per direction: the BiGRU's output is 300 wide, as in the seed
    graph_dim: int = 128  # label node width in the gated graph network
    word_dim: int = 300
    word_corpus: int = 0  # sentences of the package corpus for word2vec (0: all of it; tests use a few thousand)
    max_tokens: int = 256
    val_fraction: float = 0.1
    refit: bool = True
    gamma_neg: float = 2.0
    margin: float = 0.05
    graph_threshold: float = 0.2
    seed: int = 13

    def name(self) -> str:
        return f"{'FMLC' if self.graph else 'LWAN'}-{self.loss.upper()}-{self.encoder}"


def decide(probs: np.ndarray, threshold: float, max_labels: int = 5) -> np.ndarray:
    """Labels at or above the threshold (at most ``max_labels``); a complaint always gets its best label."""
    out = np.zeros_like(probs, dtype=np.int8)
    for i, row in enumerate(probs):
        order = np.argsort(-row)[:max_labels]
        chosen = [j for j in order if row[j] >= threshold] or [int(order[0])]
        out[i, chosen] = 1
    return out


def best_threshold(probs: np.ndarray, y: np.ndarray, codes: list[str], counts: list[int]) -> tuple[float, float]:
    best = (0.5, -1.0)
    for t in np.arange(0.1, 0.91, 0.05):
        report = multilabel_report(y, decide(probs, float(t)), codes, counts)
        score = (report["micro_f1"] + report["macro_f1"]) / 2
        if score > best[1] + 1e-9:
            best = (round(float(t), 2), score)
    return best


def _loss(cfg: TrainConfig):  # type: ignore[no-untyped-def]
    from nlu.losses.asymmetric import asymmetric_loss, multilabel_bce

    if cfg.loss == "asl":
        return lambda logits, y: asymmetric_loss(logits, y, gamma_neg=cfg.gamma_neg, margin=cfg.margin)
    if cfg.loss == "bce":
        return multilabel_bce
    raise ValueError(f"unknown loss {cfg.loss!r}; use asl or bce")


def predict(net: Any, features: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    import torch

    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            x, lengths = pad(features[start:start + batch_size])
            out.append(torch.sigmoid(net(x, lengths)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _train(featurizer: Featurizer, features: list[np.ndarray], y: np.ndarray, cfg: TrainConfig, epochs: int,
           val: tuple[list[np.ndarray], np.ndarray, list[str], list[int]] | None, progress: bool) -> tuple[Any, dict[str, Any]]:
    import torch

    from nlu.complaints.model import FMLCNet

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    adjacency = label_graph.cooccurrence(y, cfg.graph_threshold) if cfg.graph else label_graph.identity(y.shape[1])
    net = FMLCNet(y.shape[1], adjacency, encoder=featurizer.network_encoder, embeddings=featurizer.embeddings(),
                  input_dim=featurizer.dim, hidden=cfg.hidden, graph_dim=cfg.graph_dim)
    optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr)
    loss_fn = _loss(cfg)
    order = list(range(len(features)))
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"score": -1.0, "epoch": epochs, "state": None, "threshold": 0.5}
    bar = range(1, epochs + 1)
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, desc=f"training {cfg.name()}", unit="epoch")
    for epoch in bar:
        net.train()
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            x, lengths = pad([features[i] for i in idx])
            loss = loss_fn(net(x, lengths), torch.tensor(y[idx]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        entry = {"epoch": epoch, "loss": round(total / len(order), 4)}
        if val is not None:
            vf, vy, codes, counts = val
            threshold, score = best_threshold(predict(net, vf), vy, codes, counts)
            entry.update(val_score=round(score, 4), threshold=threshold)
            if score > best["score"] + 1e-4:
                best = {"score": score, "epoch": epoch, "threshold": threshold,
                        "state": {k: v.clone() for k, v in net.state_dict().items()}}
            elif epoch - best["epoch"] >= cfg.patience:
                history.append(entry)
                break
        history.append(entry)
        if progress:
            bar.set_postfix({k: v for k, v in entry.items() if k != "epoch"})  # type: ignore[union-attr]
    if val is not None and best["state"] is not None:
        net.load_state_dict(best["state"])
    return net, {"history": history, "best_epoch": best["epoch"], "val_score": round(best["score"], 4),
                 "threshold": best["threshold"], "adjacency": adjacency}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """The network's matrices are small (batch 32, width 300): a second intra-op thread gains little and, when the
    other core is busy, OpenMP's waiting made a backward pass 10-70x slower here (benchmarks/complaints.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(complaints: list[Complaint], cfg: TrainConfig, featurizer: Featurizer, progress: bool = True) -> dict[str, Any]:
    """Train on ``complaints``; returns what ``ComplaintModel`` needs (network, labels, threshold, report)."""
    with one_thread():
        return _fit(complaints, cfg, featurizer, progress)


def _fit(complaints: list[Complaint], cfg: TrainConfig, featurizer: Featurizer, progress: bool) -> dict[str, Any]:
    if len(complaints) < 20:
        raise ValueError(f"{len(complaints)} complaints are too few to train on; give at least 20 (hundreds to be useful).")
    started = time.monotonic()
    labels = LabelSet.of(complaints)
    y, _ = labels.matrix(complaints)
    texts = [truncate(c.text)[0] for c in complaints]
    features = featurizer.fit(texts, progress=progress)
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(complaints))
    n_val = max(1, int(len(complaints) * cfg.val_fraction))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    codes, counts = list(labels.codes), list(labels.counts)
    net, first = _train(featurizer, [features[i] for i in tr_idx], y[tr_idx], cfg, cfg.epochs,
                        ([features[i] for i in val_idx], y[val_idx], codes, counts), progress)
    info: dict[str, Any] = {"validation": {"examples": int(n_val), "best_epoch": first["best_epoch"],
                                           "score": first["val_score"], "history": first["history"]}}
    adjacency = first["adjacency"]
    if cfg.refit:
        net, second = _train(featurizer, features, y, cfg, first["best_epoch"], None, progress)
        adjacency = second["adjacency"]
    info.update(seconds=round(time.monotonic() - started, 1), config=asdict(cfg), graph_edges=label_graph.edges(adjacency))
    return {"net": net, "labels": labels, "threshold": first["threshold"], "info": info}


def save_path(directory: Path) -> Path:
    return directory / "complaint_model.json"
