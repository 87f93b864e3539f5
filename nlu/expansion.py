"""Generating extension questions (扩展问) with ALBERT-sim's UniLM head, then filtering them.

Candidates come from beam search (the seed's method) or SimBERT-style top-k sampling. Filters, in
order: empty or identical to the source; duplicates and near-duplicates (cosine ≥ ``near_duplicate``)
of questions the knowledge base already has; candidates the matcher places closer to another intent
than to their own. Survivors are ranked by encoder similarity to the source.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from knowledge_base.errors import CallbotError
from nlu.albert.unilm import unilm_mask


class ExpanderUnavailable(CallbotError):
    pass


@dataclass
class Candidate:
    text: str
    similarity: float  # to the source, by the matching encoder
    nearest_intent: str | None = None


_SENTENCE_END = re.compile(r"[?？!！。]")
_FULL_WIDTH = str.maketrans({"?": "？", "!": "！", ",": "，", ";": "；", ":": "："})


def tidy_question(text: str) -> str:
    """One question, written the way staff write Chinese ones. The tokenizer decodes punctuation as
    ASCII, and a small generator rarely stops at the question mark: it runs on with fragments
    (怎么注销账户?怎么销?), so everything after the first sentence end is dropped."""
    end = _SENTENCE_END.search(text)
    if end:
        text = text[: end.end()]
    text = re.sub(r"\s*([?？!！。,，])\s*", r"\1", text).strip(" ,，、")
    if not re.search(r"\w", text):
        return ""
    if re.search(r"[\u4e00-\u9fff]", text):
        text = text.translate(_FULL_WIDTH)
    return text


class Generator:
    """Beam search and sampling over segment 2 of ``[CLS] source [SEP] …``."""

    def __init__(self, model_dir: Path, threads: int | None = None, copy_bias: float = 0.0):
        meta = json.loads((model_dir / "callbot_encoder.json").read_text()) if (model_dir / "callbot_encoder.json").is_file() else {}
        if meta.get("kind") != "albert-sim" or meta.get("stage") != "pairs":
            raise ExpanderUnavailable(
                f"{model_dir} has no trained generation head; expansion needs an ALBERT-sim trained with "
                "`callbot model train --pairs …` (GenF)."
            )
        from transformers import AlbertForMaskedLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if threads:  # else the calling thread's own setting (the web app's generation thread runs one)
            torch.set_num_threads(threads)
        self.model = AlbertForMaskedLM.from_pretrained(model_dir).eval()
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.name = meta.get("name", model_dir.name)
        self.path = model_dir
        self.repetition_penalty = 1.5
        # Added to the logits of the source's own tokens: a paraphrase mostly reuses the source's words,
        # and a small generator otherwise drifts into its training corpora's vocabulary.
        self.copy_bias = copy_bias
        # Tokens that end a question: a hypothesis is finished there, so the beam's width goes to
        # different questions instead of fragments after the question mark.
        self.question_ends = {i for t, i in self.tok.get_vocab().items() if _SENTENCE_END.fullmatch(t.lstrip("▁"))}

    def _next_logprobs(self, src: list[int], prefixes: list[list[int]]) -> torch.Tensor:
        cls, sep, pad = self.tok.cls_token_id, self.tok.sep_token_id, self.tok.pad_token_id
        rows = [[cls, *src, sep, *p] for p in prefixes]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        types = torch.ones((len(rows), width), dtype=torch.long)
        valid = torch.zeros((len(rows), width), dtype=torch.bool)
        last = []
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            types[i, : len(src) + 2] = 0
            valid[i, : len(r)] = True
            last.append(len(r) - 1)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, token_type_ids=types, attention_mask=unilm_mask(types, valid)).logits
        out = logits[torch.arange(len(rows)), torch.tensor(last)]
        if self.copy_bias:
            out[:, sorted(set(src))] += self.copy_bias
        out[:, [cls, pad, self.tok.unk_token_id, self.tok.mask_token_id]] = float("-inf")
        logp = torch.log_softmax(out, dim=-1)
        for i, prefix in enumerate(prefixes):
            if prefix:
                # A small model loops ("再再再再"): no immediate repeats, no repeated bigram, and a
                # penalty on tokens already used.
                logp[i, prefix[-1]] = float("-inf")
                for a, b in zip(prefix, prefix[1:], strict=False):
                    if a == prefix[-1]:
                        logp[i, b] = float("-inf")
                used = torch.tensor(sorted(set(prefix)))
                logp[i, used] -= self.repetition_penalty
        return logp

    def _decode(self, ids: list[int]) -> str:
        text = self.tok.decode(ids, skip_special_tokens=True)
        return tidy_question(re.sub(r"(?<=[\u4e00-\u9fff])\s+|\s+(?=[\u4e00-\u9fff])", "", text).strip())

    def beam(self, text: str, n: int, beam_size: int | None = None, max_len: int = 32) -> list[str]:
        src = self.tok(text, add_special_tokens=False, truncation=True, max_length=48)["input_ids"]
        beam_size = beam_size or max(n, 8)
        sep = self.tok.sep_token_id
        beams: list[tuple[list[int], float]] = [([], 0.0)]
        finished: list[tuple[list[int], float]] = []
        for _ in range(max_len):
            logp = self._next_logprobs(src, [b for b, _ in beams])
            scores = torch.tensor([s for _, s in beams])[:, None] + logp
            top = torch.topk(scores.flatten(), min(beam_size * 2, scores.numel()))
            nxt: list[tuple[list[int], float]] = []
            for value, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                b, tokid = divmod(flat, logp.shape[1])
                seq = beams[b][0] + [tokid]
                if tokid == sep or tokid in self.question_ends:
                    kept = seq[:-1] if tokid == sep else seq
                    if len(kept) > 1:
                        finished.append((kept, value / len(seq)))  # length-normalised
                else:
                    nxt.append((seq, value))
                if len(nxt) >= beam_size:
                    break
            beams = nxt
            if not beams or len(finished) >= beam_size * 3:
                break
        if len(finished) < n:  # ran out of length: keep the best unfinished hypotheses too
            finished += [(seq, score / max(1, len(seq))) for seq, score in beams]
        finished.sort(key=lambda x: -x[1])
        return [t for t in dict.fromkeys(self._decode(s) for s, _ in finished) if t][: n * 3]

    def back_scores(self, source: str, candidates: list[str], batch: int = 32) -> list[float]:
        """Mean log-probability per token of regenerating ``source`` from each candidate (teacher
        forcing, no copy bias): a candidate that dropped or garbled the source's content cannot lead
        back to it, however close its sentence vector is."""
        from nlu.albert.unilm import build_unilm_batch

        if not candidates:
            return []
        src = self.tok(source, add_special_tokens=False, truncation=True, max_length=48)["input_ids"]
        out: list[float] = []
        for start in range(0, len(candidates), batch):
            chunk = candidates[start : start + batch]
            ids = [self.tok(c, add_special_tokens=False, truncation=True, max_length=48)["input_ids"] for c in chunk]
            b = build_unilm_batch([(c, src) for c in ids], self.tok.cls_token_id, self.tok.sep_token_id,
                                  self.tok.pad_token_id, max_len=64)
            with torch.inference_mode():
                logits = self.model(input_ids=b.input_ids, token_type_ids=b.token_type_ids,
                                    attention_mask=b.attention_mask).logits
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, b.input_ids[:, 1:, None])[..., 0]
            mask = b.target_mask[:, 1:].float()
            out += ((logp * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()
        return out

    def sample(self, text: str, n: int, top_k: int = 5, max_len: int = 32, seed: int = 0) -> list[str]:
        src = self.tok(text, add_special_tokens=False, truncation=True, max_length=48)["input_ids"]
        gen = torch.Generator().manual_seed(seed)
        count = max(n * 4, 32)
        seqs: list[list[int]] = [[] for _ in range(count)]
        done = [False] * count
        sep = self.tok.sep_token_id
        for _ in range(max_len):
            active = [i for i in range(count) if not done[i]]
            if not active:
                break
            logp = self._next_logprobs(src, [seqs[i] for i in active])
            vals, idx = torch.topk(logp, top_k, dim=-1)
            probs = torch.softmax(vals, dim=-1)
            picks = torch.multinomial(probs, 1, generator=gen)[:, 0]
            for row, i in enumerate(active):
                tokid = int(idx[row, picks[row]])
                if tokid != sep:
                    seqs[i].append(tokid)
                if tokid == sep or tokid in self.question_ends:
                    done[i] = True
        return [t for t in dict.fromkeys(self._decode(s) for s in seqs if s) if t]


def filter_and_rank(source: str, candidates: list[str], encoder, existing: list[str],  # type: ignore[no-untyped-def]
                    classify=None, own_intent: str | None = None, near_duplicate: float = 0.98, n: int = 20) -> list[Candidate]:
    """Drop empties, existing questions and near-duplicates, and candidates closer to another intent."""
    existing_set = set(existing) | {source}
    fresh = [c for c in dict.fromkeys(candidates) if c and c not in existing_set and len(c) <= 200]
    if not fresh:
        return []
    vecs = encoder.encode([source, *fresh, *existing])
    src_vec, cand_vecs, exist_vecs = vecs[0], vecs[1 : len(fresh) + 1], vecs[len(fresh) + 1 :]
    kept: list[Candidate] = []
    kept_vecs: list[np.ndarray] = []
    order = np.argsort(-(cand_vecs @ src_vec))
    for i in order:
        v = cand_vecs[i]
        if len(exist_vecs) and float((exist_vecs @ v).max()) >= near_duplicate:
            continue
        if kept_vecs and float(max(float(k @ v) for k in kept_vecs)) >= near_duplicate:
            continue
        nearest = classify(fresh[i]) if classify else None
        if own_intent and nearest and nearest != own_intent:
            continue
        kept.append(Candidate(fresh[i], round(float(v @ src_vec), 4), nearest))
        kept_vecs.append(v)
        if len(kept) >= n:
            break
    return kept
