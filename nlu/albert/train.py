"""ALBERT-sim training: distillation from e5-small, then GenF + SimF on paraphrase pairs.

Both loops checkpoint every ``checkpoint_every`` steps into ``<out>.partial/checkpoint.pt`` and resume
from it, show a progress bar, and save ``training_curve.png`` beside the model.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nlu.albert.curves import plot_losses
from nlu.albert.encode import cls_vectors
from nlu.albert.teacher_states import TeacherStates
from nlu.albert.unilm import build_unilm_batch
from nlu.losses.am_softmax import am_softmax_loss
from nlu.losses.cosent import cosent_loss
from nlu.losses.distillation import distillation_loss
from nlu.losses.generation import generation_loss_from_hidden
from nlu.losses.hidden_states import hidden_state_loss


def _train_threads() -> int:
    from callbot.settings import get_settings

    return get_settings().nlu.train_threads


@dataclass
class TrainConfig:
    epochs: float = 1.0
    batch_size: int = 64
    lr: float = 1e-4
    warmup: float = 0.05
    weight_decay: float = 0.01
    checkpoint_every: int = 200
    max_length: int = 48
    seed: int = 13
    threads: int = field(default_factory=lambda: _train_threads())
    # pair training only
    scale: float = 30.0
    margin: float = 0.35
    finance_ratio: float = 0.5  # share of each batch from the financial corpus
    gen_weight: float = 1.0
    # teacher anchor during pair training: weight of a distillation term on a mixed-in batch of
    # sentences with cached e5 vectors (0 = off), and that batch's size
    teacher_weight: float = 0.0
    teacher_batch: int = 32
    # distillation (and the teacher anchor): weight of the in-batch neighbour-ranking term
    relation_weight: float = 0.0
    relation_temperature: float = 0.05
    # distillation: weight of the hidden-state term (each pass imitates its e5 layer, token by token)
    hidden_weight: float = 0.0
    # ...paid on the first this-many sentences of each batch: e5's forward pass costs more than the student's
    # training step, and a few hundred aligned tokens per step are plenty for a token-level term
    hidden_sentences: int = 16
    # pair training: weight of the CoSENT term on a mixed-in batch of labelled pairs (both labels; 0 = off)
    cosent_weight: float = 0.0
    cosent_batch: int = 32
    cosent_scale: float = 20.0
    extra: dict[str, Any] = field(default_factory=dict)


def teacher_vectors(encoder, sentences: list[str], cache_dir: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    """e5 vectors for ``sentences``, cached on disk by content hash (teacher encoding is the slow part).

    Each cache file has a ``.sentences.json`` beside it naming its teacher and sentences; a new sentence
    set takes the vectors of sentences an earlier set already encoded and encodes only the rest (the
    licence-clean distillation set is a subset of the research one).
    """
    key = hashlib.sha1(("\n".join(sentences) + encoder.name).encode()).hexdigest()[:16]
    path = cache_dir / f"teacher-{key}.npy"
    listing = cache_dir / f"teacher-{key}.sentences.json"
    if path.is_file():
        vecs = np.load(path)
        if vecs.shape == (len(sentences), encoder.dim):
            if not listing.is_file():  # written by an older version: let later sets reuse it
                listing.write_text(json.dumps({"teacher": encoder.name, "sentences": sentences}, ensure_ascii=False), encoding="utf-8")
            return vecs
    vecs = np.zeros((len(sentences), encoder.dim), dtype=np.float32)
    todo = dict.fromkeys(range(len(sentences)))
    where = {t: i for i, t in enumerate(sentences)}
    for other in sorted(cache_dir.glob("teacher-*.sentences.json")) if cache_dir.is_dir() else []:
        if not todo:
            break
        try:
            info = json.loads(other.read_text(encoding="utf-8"))
            their = np.load(other.with_name(other.name.removesuffix(".sentences.json") + ".npy"), mmap_mode="r")
        except (OSError, ValueError):
            continue  # a damaged cache entry only costs re-encoding
        cached = info.get("sentences", [])
        if info.get("teacher") != encoder.name or their.shape != (len(cached), encoder.dim):
            continue
        for j, t in enumerate(cached):
            i = where.get(t)
            if i is not None and i in todo:
                vecs[i] = their[j]
                del todo[i]
    if todo:
        missing = list(todo)
        vecs[missing] = encoder.encode([sentences[i] for i in missing], batch_size=128, progress=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    listing.write_text(
        json.dumps({"teacher": encoder.name, "sentences": sentences}, ensure_ascii=False), encoding="utf-8")
    return vecs


def _load(model_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AlbertForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return AlbertForMaskedLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)


def _schedule(optimizer: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, int(total * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Run:
    """Shared plumbing: optimizer, resumable checkpoints, loss history, curve plot, atomic save."""

    def __init__(self, src: Path, out: Path, cfg: TrainConfig, total_steps: int, stage: str):
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.out, self.cfg, self.total, self.stage = out, cfg, total_steps, stage
        self.work = out.with_name(out.name + ".partial")
        self.model, self.tokenizer = _load(src)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = _schedule(self.optimizer, total_steps, cfg.warmup)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.src_meta = json.loads((src / "callbot_encoder.json").read_text())
        ckpt = self.work / "checkpoint.pt"
        if ckpt.is_file():
            state = torch.load(ckpt, weights_only=False)
            if state.get("total") == total_steps and state.get("stage") == stage:
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
                self.step, self.history = state["step"], state["history"]
        self.work.mkdir(parents=True, exist_ok=True)

    def update(self, loss: torch.Tensor, parts: dict[str, float]) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.history.append({"step": self.step, "loss": loss.item(), **parts})
        if self.step % self.cfg.checkpoint_every == 0:
            self.checkpoint()

    def checkpoint(self) -> None:
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "step": self.step, "history": self.history,
                    "total": self.total, "stage": self.stage}, self.work / "checkpoint.pt")
        self.plot(self.work / "training_curve.png")

    def plot(self, path: Path) -> None:
        plot_losses(self.history, path, f"ALBERT-sim {self.stage}")

    def finish(self, name: str, data: list[str], extra: dict[str, Any]) -> Path:
        self.model.eval()
        self.model.save_pretrained(self.work, safe_serialization=True)
        self.tokenizer.save_pretrained(self.work)
        self.plot(self.work / "training_curve.png")
        meta = {**self.src_meta, "name": name, "stage": self.stage, "data": data, "train_config": asdict(self.cfg),
                "steps": self.step, "parent": self.src_meta.get("name"), **extra}
        (self.work / "callbot_encoder.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2))
        (self.work / "checkpoint.pt").unlink(missing_ok=True)
        shutil.rmtree(self.out, ignore_errors=True)
        self.work.rename(self.out)
        return self.out


def distill(src: Path, out: Path, sentences: list[str], teacher: np.ndarray, cfg: TrainConfig, data: list[str],
            progress: Callable[[int, int], None] | None = None, name: str = "albert-sim-distilled",
            teacher_states: TeacherStates | None = None) -> Path:
    """Distil e5's sentence vectors (``teacher``, one row per sentence) into the ALBERT-sim at ``src``;
    with ``teacher_states`` and ``cfg.hidden_weight`` > 0 every pass also imitates its e5 layer."""
    n_batches = max(1, len(sentences) // cfg.batch_size)
    total = int(n_batches * cfg.epochs)
    run = _Run(src, out, cfg, total, "distill")
    rng = random.Random(cfg.seed)
    order = list(range(len(sentences)))
    use_hidden = teacher_states is not None and cfg.hidden_weight > 0
    started = time.monotonic()
    with tqdm(total=total, initial=run.step, desc="distilling from e5-small", unit="step") as bar:
        epoch = 0
        while run.step < total:
            rng.seed(cfg.seed + epoch)
            rng.shuffle(order)
            for b in range(n_batches):
                if run.step >= total:
                    break
                if epoch * n_batches + b < run.step:
                    continue  # resuming: skip batches already trained on
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                texts = [sentences[i] for i in idx]
                parts: dict[str, float] = {}
                if use_hidden:
                    student, passes = _student_states(run.model.albert, run.tokenizer, texts, cfg.max_length)
                    aligned = teacher_states.states(texts[: cfg.hidden_sentences], run.tokenizer, cfg.max_length)  # type: ignore[union-attr]
                    hidden = hidden_state_loss(passes, aligned.teacher, aligned.rows, aligned.student_pos,
                                               aligned.teacher_pos)
                    parts["hidden"] = hidden.item()
                else:
                    student = cls_vectors(run.model.albert, run.tokenizer, texts, cfg.max_length)
                loss = distillation_loss(student, torch.from_numpy(teacher[idx]),
                                         relation_weight=cfg.relation_weight, temperature=cfg.relation_temperature)
                if use_hidden:
                    parts["vector"] = loss.item()
                    loss = loss + cfg.hidden_weight * hidden
                run.update(loss, parts)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
            epoch += 1
    extra: dict[str, Any] = {"train_seconds": round(time.monotonic() - started, 1), "sentences": len(sentences)}
    if use_hidden:
        extra["hidden_distillation"] = {"teacher_layers": teacher_states.layers, "weight": cfg.hidden_weight,
                                        "sentences_per_step": cfg.hidden_sentences}  # type: ignore[union-attr]
    return run.finish(name, data, extra)


def _student_states(albert: torch.nn.Module, tokenizer, texts: list[str], max_length: int):  # type: ignore[no-untyped-def]
    """[CLS] vectors and the output of every pass (for the hidden-state term)."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    out = albert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 token_type_ids=torch.zeros_like(batch["input_ids"]), output_hidden_states=True)
    return out.last_hidden_state[:, 0], list(out.hidden_states[1:])


Triple = tuple[str, str, str | None]  # anchor, paraphrase, hard negative (or None)


def _mixed_sample(rng: random.Random, finance: list, general: list, size: int, finance_ratio: float) -> list:
    """``size`` items, ``finance_ratio`` of them financial (all of one kind when the other is empty)."""
    n_fin = round(size * finance_ratio) if finance and general else (size if finance else 0)
    n_gen = size - n_fin
    return (rng.sample(finance, min(n_fin, len(finance))) if n_fin else []) + (
        rng.sample(general, min(n_gen, len(general))) if n_gen else [])


def _pair_batches(finance: list[Triple], general: list[Triple], cfg: TrainConfig, total: int) -> Iterator[list[Triple]]:
    rng = random.Random(cfg.seed)
    for _ in range(total):
        batch = _mixed_sample(rng, finance, general, cfg.batch_size, cfg.finance_ratio)
        # No sentence twice in a batch: a duplicate would be a false in-batch negative.
        seen: set[str] = set()
        clean = []
        for a, b, neg in batch:
            if a not in seen and b not in seen and a != b:
                seen.update((a, b))
                clean.append((a, b, neg if neg not in (a, b) else None))
        yield clean


@dataclass
class TeacherAnchor:
    """Sentences with cached teacher vectors, mixed into pair training so the student keeps what
    distillation taught it (pair data alone pulls it towards the pair corpora's notion of similarity).
    ``focus`` indices (the knowledge base's own questions) fill ``focus_share`` of every batch."""

    sentences: list[str]
    vectors: np.ndarray
    focus: list[int] = field(default_factory=list)
    focus_share: float = 0.25

    def batches(self, size: int, seed: int) -> Iterator[list[int]]:
        rng = random.Random(seed + 1)
        n_focus = min(len(self.focus), round(size * self.focus_share)) if self.focus else 0
        everything = range(len(self.sentences))
        while True:
            picked = (rng.sample(self.focus, n_focus) if n_focus else []) + rng.sample(everything, size - n_focus)
            yield list(dict.fromkeys(picked))


@dataclass
class LabelledPairs:
    """Sentence pairs with their 0/1 labels, financial and general, for the CoSENT term: each batch
    mixes the two at the pair batches' ratio, so both domains share one threshold."""

    finance: list[tuple[str, str, int]]
    general: list[tuple[str, str, int]]

    def batches(self, size: int, finance_ratio: float, seed: int) -> Iterator[list[tuple[str, str, int]]]:
        rng = random.Random(seed + 2)
        while True:
            yield _mixed_sample(rng, self.finance, self.general, size, finance_ratio)


def train_pairs(src: Path, out: Path, finance: list[Triple], general: list[Triple], cfg: TrainConfig,
                data: list[str], anchor: TeacherAnchor | None = None, meta: dict[str, Any] | None = None,
                labelled: LabelledPairs | None = None) -> Path:
    """GenF + SimF (AM-softmax) on paraphrase pairs, each pair used in both directions; a pair's hard
    negative (when it has one) is an extra column every row must score below its partner. With an
    ``anchor`` and ``cfg.teacher_weight`` > 0, each step also pays the distillation loss on a batch of
    anchor sentences; with ``labelled`` pairs and ``cfg.cosent_weight`` > 0, the CoSENT loss on a batch
    of them, each side encoded alone as at matching time."""
    pairs_total = len(finance) + len(general)
    total = max(1, int(pairs_total * cfg.epochs / cfg.batch_size))
    run = _Run(src, out, cfg, total, "pairs")
    tok = run.tokenizer
    started = time.monotonic()
    batches = _pair_batches(finance, general, cfg, total)
    use_anchor = anchor is not None and cfg.teacher_weight > 0 and len(anchor.sentences) >= cfg.teacher_batch
    anchor_batches = anchor.batches(cfg.teacher_batch, cfg.seed) if use_anchor else None
    use_cosent = labelled is not None and cfg.cosent_weight > 0 and bool(labelled.finance or labelled.general)
    cosent_batches = labelled.batches(cfg.cosent_batch, cfg.finance_ratio, cfg.seed) if use_cosent and labelled else None
    for _ in range(run.step):
        next(batches)  # resuming: same sampling sequence, skip what was trained
        for extra in (anchor_batches, cosent_batches):
            if extra is not None:
                next(extra)
    with tqdm(total=total, initial=run.step, desc="training GenF+SimF", unit="step") as bar:
        for batch in batches:
            texts = [t for a, b, _ in batch for t in (a, b)]
            ids = tok(texts, add_special_tokens=False, truncation=True, max_length=cfg.max_length)["input_ids"]
            a_ids, b_ids = ids[0::2], ids[1::2]
            seqs = list(zip(a_ids, b_ids, strict=True)) + list(zip(b_ids, a_ids, strict=True))
            ub = build_unilm_batch(seqs, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, max_len=2 * cfg.max_length)
            hidden = run.model.albert(input_ids=ub.input_ids, token_type_ids=ub.token_type_ids,
                                      attention_mask=ub.attention_mask).last_hidden_state
            cls = hidden[:, 0]
            n = len(batch)
            positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
            hard = [neg for _, _, neg in batch if neg]
            negatives = cls_vectors(run.model.albert, tok, hard, cfg.max_length) if hard else None
            sim = am_softmax_loss(cls, positive, cfg.scale, cfg.margin, negatives)
            gen = generation_loss_from_hidden(run.model.predictions, hidden, ub.input_ids, ub.target_mask)
            loss = sim + cfg.gen_weight * gen
            parts = {"simF": sim.item(), "genF": gen.item()}
            if anchor_batches is not None:
                idx = next(anchor_batches)
                student = cls_vectors(run.model.albert, tok, [anchor.sentences[i] for i in idx], cfg.max_length)
                teach = distillation_loss(student, torch.from_numpy(anchor.vectors[idx]))
                loss = loss + cfg.teacher_weight * teach
                parts["teacher"] = teach.item()
            if cosent_batches is not None:
                rows = next(cosent_batches)
                sides = cls_vectors(run.model.albert, tok, [t for a, b, _ in rows for t in (a, b)], cfg.max_length)
                sides = torch.nn.functional.normalize(sides, dim=-1)
                cos = (sides[0::2] * sides[1::2]).sum(-1)
                ranked = cosent_loss(cos, torch.tensor([y for _, _, y in rows], dtype=cos.dtype), cfg.cosent_scale)
                loss = loss + cfg.cosent_weight * ranked
                parts["cosent"] = ranked.item()
            run.update(loss, parts)
            bar.update(1)
            bar.set_postfix(sim=f"{sim.item():.3f}", gen=f"{gen.item():.3f}")
    return run.finish(out.name, data, {"train_seconds": round(time.monotonic() - started, 1),
                                       "pairs": {"finance": len(finance), "general": len(general)},
                                       "hard_negatives": sum(1 for t in finance + general if t[2]),
                                       "teacher_anchor": len(anchor.sentences) if use_anchor else 0,
                                       "cosent_pairs": len(labelled.finance) + len(labelled.general) if use_cosent and labelled else 0,
                                       **(meta or {})})
