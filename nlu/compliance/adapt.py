"""Masked-LM adaptation of the compliance encoder to sales talk, keeping its sentence vectors.

Seed 000 asks for self-supervised help beside the labelled data. The released ALBERT-sim is an ``AlbertForMaskedLM``
(its MLM head ships with it), so a few hundred masked-LM steps on the firm's own wording — the labelled sentences'
text without their labels, the knowledge base's answers and prompts, and package news sentences — teach its token
states the register of sales calls (dialect, ASR slips, 保本/本钱/兜底 in context).

Masked-LM alone does not train the [CLS] vector the classifier head reads, and moves it away from what the
similarity training made of it. So each step adds a **keep** term: 1 − cos(the adapted encoder's [CLS] vector of the
unmasked sentence, the unadapted encoder's vector of it), weighted by ``keep_weight``. Inputs: sentences (str);
output: a model directory in the same layout as the source, with ``callbot_encoder.json`` saying how it was made.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knowledge_base.errors import CallbotError


@dataclass(frozen=True)
class AdaptConfig:
    steps: int = 600
    batch_size: int = 32
    lr: float = 5e-5
    warmup: float = 0.06
    mask_prob: float = 0.15
    keep_weight: float = 1.0  # weight of the vector-keeping term beside the masked-LM loss
    max_length: int = 64
    seed: int = 7
    threads: int = 2


def adaptable(model_dir: Path) -> bool:
    """An ALBERT-sim with [CLS] pooling and its masked-LM head (e5-small has none)."""
    meta_file = model_dir / "callbot_encoder.json"
    if not meta_file.is_file():
        return False
    meta = json.loads(meta_file.read_text())
    return meta.get("kind") == "albert-sim" and meta.get("pooling") == "cls"


def unique_texts(texts: list[str]) -> list[str]:
    return [t for t in dict.fromkeys(t.strip() for t in texts) if t]


def texts_sha256(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def adapt_encoder(src: Path, out: Path, texts: list[str], cfg: AdaptConfig, key: dict[str, Any] | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Masked-LM steps on ``texts`` from the checkpoint ``src`` into ``out``; returns the run's figures. ``key`` is
    stored with them: what the caller checks later to know the adapted encoder is still the one it wants. Torch's
    thread count is the process's: it is set for the run and restored after (other work in the process keeps its own)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _adapt(src, out, texts, cfg, key, progress)
    finally:
        torch.set_num_threads(before)


def _adapt(src: Path, out: Path, texts: list[str], cfg: AdaptConfig, key: dict[str, Any] | None,
           progress: bool) -> dict[str, Any]:
    import torch
    from transformers import AlbertForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling
    from transformers.utils import logging as hf_logging

    from nlu.encoders.sentence_encoder import SentenceEncoder

    hf_logging.set_verbosity_error()
    if not adaptable(src):
        raise CallbotError(f"{src} is not an ALBERT-sim checkpoint with [CLS] pooling; masked-LM adaptation needs one "
                           "(set compliance.encoder to the released ALBERT-sim).")
    texts = unique_texts(texts)
    if len(texts) < cfg.batch_size:
        raise CallbotError(f"Masked-LM adaptation needs at least {cfg.batch_size} sentences; got {len(texts)}.")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)

    anchors = torch.from_numpy(SentenceEncoder(src).encode(texts, progress=progress))  # the vectors to keep
    tokenizer = AutoTokenizer.from_pretrained(src)
    model = AlbertForMaskedLM.from_pretrained(src, dtype=torch.float32)
    model.train()
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mask_prob, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, int(cfg.steps * cfg.warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm))))

    order: list[int] = []
    mlm_trace: list[float] = []
    keep_trace: list[float] = []
    started = time.monotonic()
    steps = range(cfg.steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="masked-LM adaptation", unit="step")
    for _ in steps:
        if len(order) < cfg.batch_size:
            fresh = list(range(len(texts)))
            rng.shuffle(fresh)
            order += fresh
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=cfg.max_length,
                          return_tensors="pt")
        masked = collator([{"input_ids": ids} for ids in batch["input_ids"].tolist()])
        mlm = model(input_ids=masked["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch.get("token_type_ids"), labels=masked["labels"]).loss
        cls = model.albert(**batch).last_hidden_state[:, 0]
        keep = (1 - (torch.nn.functional.normalize(cls, dim=-1) * anchors[idx]).sum(-1)).mean()
        loss = mlm + cfg.keep_weight * keep
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        mlm_trace.append(mlm.item())
        keep_trace.append(keep.item())
        if progress and hasattr(steps, "set_postfix"):
            steps.set_postfix(mlm=f"{np.mean(mlm_trace[-20:]):.3f}", keep=f"{np.mean(keep_trace[-20:]):.4f}")

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.eval()
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    n = max(1, cfg.steps // 10)
    figures = {"sentences": len(texts), "seconds": round(time.monotonic() - started, 1),
               "mlm_loss_first": round(float(np.mean(mlm_trace[:n])), 4), "mlm_loss_last": round(float(np.mean(mlm_trace[-n:])), 4),
               "keep_loss_last": round(float(np.mean(keep_trace[-n:])), 5)}
    meta = json.loads((src / "callbot_encoder.json").read_text())
    meta = {**meta, "name": f"{meta.get('name', src.name)}-compliance", "stage": "compliance-mlm", "parent": meta.get("name", src.name),
            "compliance_adaptation": {"config": asdict(cfg), "key": key or {}, "texts_sha256": texts_sha256(texts), **figures}}
    (tmp / "callbot_encoder.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return figures
