"""Few-shot, weakly supervised fine-tuning of a sentence encoder for one scenario (seed 003).

Episodes of N intents × K support examples plus held-out queries; an intent's score is the max cosine
over its support examples (episodic loss). Two guards against forgetting the general geometry:
in-batch AM-softmax on general paraphrase pairs mixed into every step, and an L2 penalty pulling the
weights toward the starting model (L2-SP).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from nlu.albert.curves import plot_losses
from nlu.losses.am_softmax import am_softmax_loss
from nlu.losses.episodic import episodic_loss


@dataclass
class FinetuneConfig:
    steps: int = 150
    n_way: int = 5
    k_shot: int = 10
    queries_per_intent: int = 2
    lr: float = 3e-5
    scale: float = 30.0
    general_batch: int = 16
    general_weight: float = 1.0
    l2sp: float = 0.01
    seed: int = 13
    threads: int = 2


class TrainableEncoder:
    """AutoModel + the pooling the checkpoint's callbot_encoder.json asks for, with gradients."""

    def __init__(self, path: Path):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.meta: dict[str, Any] = json.loads((path / "callbot_encoder.json").read_text())
        kwargs = {"add_pooling_layer": False} if self.meta.get("kind") == "e5" else {}
        self.model = AutoModel.from_pretrained(path, **kwargs)
        self.tokenizer = AutoTokenizer.from_pretrained(path)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        prefix = self.meta.get("prefix", "")
        batch = self.tokenizer([prefix + t for t in texts], padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        if self.meta.get("pooling") == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def finetune_scenario(src: Path, out: Path, intents: dict[str, list[str]], general: list[tuple[str, str]],
                      cfg: FinetuneConfig, scenario: str) -> Path:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    enc = TrainableEncoder(src)
    enc.model.train()
    anchor = {n: p.detach().clone() for n, p in enc.model.named_parameters()}
    optimizer = torch.optim.AdamW(enc.model.parameters(), lr=cfg.lr, weight_decay=0.0)
    names = [n for n, qs in intents.items() if len(qs) >= 2]
    history = []
    started = time.monotonic()
    for _step in tqdm(range(cfg.steps), desc=f"fine-tuning on {scenario}", unit="episode"):
        way = rng.sample(names, min(cfg.n_way, len(names)))
        support, s_labels, queries, q_labels = [], [], [], []
        for label, name in enumerate(way):
            pool = rng.sample(intents[name], len(intents[name]))
            nq = min(cfg.queries_per_intent, len(pool) - 1)
            queries += pool[:nq]
            q_labels += [label] * nq
            shots = pool[nq : nq + cfg.k_shot]
            support += shots
            s_labels += [label] * len(shots)
        vecs = enc(support + queries)
        loss = episodic_loss(vecs[len(support):], vecs[: len(support)], torch.tensor(s_labels), torch.tensor(q_labels),
                             len(way), cfg.scale)
        parts = {"episodic": loss.item()}
        if general and cfg.general_weight > 0:
            pairs = rng.sample(general, min(cfg.general_batch, len(general)))
            g = enc([t for p in pairs for t in p])
            n = len(pairs)
            positive = torch.tensor([i + 1 if i % 2 == 0 else i - 1 for i in range(2 * n)])
            g_loss = am_softmax_loss(g, positive, 30.0, 0.35)
            loss = loss + cfg.general_weight * g_loss
            parts["general"] = g_loss.item()
        if cfg.l2sp > 0:
            drift = sum(((p - anchor[n]) ** 2).sum() for n, p in enc.model.named_parameters())
            loss = loss + cfg.l2sp * drift
            parts["l2sp"] = drift.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.model.parameters(), 1.0)
        optimizer.step()
        history.append({"loss": loss.item(), **parts})

    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    enc.model.eval()
    enc.model.save_pretrained(work, safe_serialization=True)
    enc.tokenizer.save_pretrained(work)
    meta = {**enc.meta, "name": out.name, "stage": "finetune", "scenario": scenario, "parent": enc.meta.get("name"),
            "finetune_config": asdict(cfg), "train_seconds": round(time.monotonic() - started, 1),
            "data": [*enc.meta.get("data", []), f"knowledge base scenario {scenario} ({sum(map(len, intents.values()))} questions)"]}
    (work / "callbot_encoder.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2))
    plot_losses(history, work / "training_curve.png", f"few-shot fine-tuning: {scenario}", "episode", skip=("l2sp",))
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    return out
