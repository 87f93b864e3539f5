"""Extension questions (扩展问): candidates from several generators, one filter, one ranking.

Generators: the ALBERT-sim's UniLM head by beam search (the seed's method) or SimBERT-style top-k
sampling, spoken-style rewrites and thesaurus swaps (nlu.rewrites). Method ``mixed`` pools the sources
in MIXED_SOURCES. The filter, in order: empty, too long, or the same text as a knowledge-base question
or an earlier candidate (punctuation and case aside); near-duplicates (cosine ≥ ``near_duplicate``) of a
knowledge-base question or of a candidate already kept; candidates the matcher places in another intent
or in fallback. Survivors are ranked by maximal marginal relevance: similarity to the source, less a
``diversity`` share of the similarity to the closest candidate already kept or knowledge-base question,
so that the top ten are not ten tiny variants of one wording.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from itertools import chain, zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch

from knowledge_base.errors import CallbotError
from nlu.albert.unilm import unilm_mask
from nlu.rewrites import Proposal, spoken_rewrites, thesaurus_swaps, vocabulary

METHODS = ("mixed", "beam", "sample", "rewrite", "thesaurus")
# What `mixed` pools: beam (skipped, with a note, where no trained generator exists) and the spoken
# rewrites. Not the thesaurus: its swaps the e5 judge accepts are mostly another sense or a sibling term
# (新股 → 港股, 回购 → 申购, 交易 → 贸易), which an encoder scores as close and staff would reject; it
# measured 7.0 % useful per top-10 slot alone (nlu.generation_quality, 30 FAQ sources, e5-small serving).
MIXED_SOURCES = ("beam", "rewrite")
MAX_QUESTION = 200  # an extension question's limit in the knowledge base
DIVERSITY = 0.25  # weight of the redundancy term in the ranking (0 = similarity to the source alone)
# Added to a candidate's ranking score by its generator. Read one by one (60 of the mixed top-10 for the 30
# FAQ sources), about 9 in 10 spoken rewrites were wordings staff would accept and 2 or 3 in 20 beam
# candidates were: the rest drop the request's object (股的税？) or invent a term (怎么开通创业股？) that the
# intent judge still places in the source's intent. So the beam fills the list where rewrites run out.
SOURCE_PRIOR = {"beam": -0.05, "sample": -0.05}


class ExpanderUnavailable(CallbotError):
    pass


@dataclass
class FormCheck:
    """Near-copies judged by a general-purpose encoder (e5-small, always in the cache) instead of the serving one.

    A pair-trained ALBERT-sim pulls every wording of an intent together: its cosines say "same intent", not
    "same wording". At 0.98 it let reframings (请问X, X呢, 咋/怎么) through as new wordings; at the cosine
    below which 1 % of such reframings fall (about 0.83 for the release) it also rejected real rewordings.
    e5-small keeps the two apart: 99 % of reframings of the knowledge base's questions score ≥ 0.98 to them."""

    encoder: Any
    threshold: float = 0.98


@dataclass
class Candidate:
    text: str
    similarity: float  # to the source, by the matching encoder
    nearest_intent: str | None = None
    source: str = "beam"  # the generator that proposed it: beam | sample | rewrite | thesaurus
    score: float = 0.0  # its ranking score (see filter_and_rank): the list is in descending score

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Expansion:
    """What one expansion returns: the ranked candidates, how many each source proposed, and notes
    (a source that was skipped and why)."""

    method: str
    candidates: list[Candidate]
    generated: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.generated.values())

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


def canonical(text: str) -> str:
    """The comparison key for "the same question": NFKC, lower case, no spaces or punctuation
    (怎么开户 and 怎么开户？ are one question to a caller and to the matcher)."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalnum())


TRUNCATION_SHARE = 0.25  # deleting a quarter of the characters or more; 怎么开立证券账户 → 怎么开证券账户 is fine


def is_truncation(source: str, candidate: str) -> bool:
    """The candidate only deletes characters from the source, in order, and at least TRUNCATION_SHARE of them
    (怎么开通科？ from 怎么开通科创板交易权限？). The small generator stops early or skips words far more often
    than it shortens a question well, and the judge (e5, character-overlap friendly) still places such
    fragments in the source's intent; a shorter wording staff want usually reorders or rewords (科创板怎么开),
    which this does not catch."""
    src, cand = canonical(source), canonical(candidate)
    if not cand or len(cand) > len(src) * (1 - TRUNCATION_SHARE):
        return False
    rest = iter(src)
    return all(ch in rest for ch in cand)


def filter_and_rank(source: str, candidates: Sequence[str | Proposal], encoder, existing: list[str],  # type: ignore[no-untyped-def]
                    classify: Callable[[str], str | None] | None = None, own_intent: str | None = None,
                    near_duplicate: float = 0.98, n: int = 20, existing_vecs: np.ndarray | None = None,
                    diversity: float = DIVERSITY, form: FormCheck | None = None,
                    form_references: Sequence[str] = ()) -> list[Candidate]:
    """The filter and ranking every source goes through (see the module docstring).

    ``candidates`` are texts (taken as beam output) or Proposals; ``existing`` the knowledge base's
    questions, with their vectors in ``existing_vecs`` when the caller has them (else encoded here).
    ``classify`` returns the intent the matcher places a text in, None for fallback; with
    ``own_intent`` a candidate is kept only when that is ``own_intent``. It runs on the way down the
    ranking, so only about ``n`` candidates pay for a match. Each Candidate's ``score`` is
    ``(1 - diversity) · cos(candidate, source) - diversity · max cos(candidate, kept candidate or
    knowledge-base question other than the source) + SOURCE_PRIOR[its generator]`` at the moment it was picked; it never rises down
    the list, as every pick only adds to the redundancy of the rest. With ``form``, near-copies of the source,
    of ``form_references`` (the intent's own questions) and of kept candidates are also judged by its encoder."""
    source_key = canonical(source)
    seen = {canonical(e) for e in existing} | {source_key}
    fresh: list[Proposal] = []
    for c in candidates:
        p = c if isinstance(c, Proposal) else Proposal(c, "beam")
        key = canonical(p.text)
        if key and key not in seen and len(p.text) <= MAX_QUESTION and not is_truncation(source, p.text):
            seen.add(key)
            fresh.append(p)
    if not fresh:
        return []
    if existing_vecs is None:
        existing_vecs = encoder.encode(existing) if existing else None
    vecs = encoder.encode([source, *(p.text for p in fresh)])
    src_vec, cand = vecs[0], vecs[1:]
    relevance = cand @ src_vec
    alive = relevance < near_duplicate  # a near-copy of the source is one of the KB's (or the staff's) wordings
    redundancy = np.zeros(len(fresh))
    if existing_vecs is not None and len(existing_vecs):
        kb = cand @ np.asarray(existing_vecs).T
        alive &= kb.max(axis=1) < near_duplicate
        # The source's own wording is the relevance term, not redundancy.
        others = np.array([canonical(e) != source_key for e in existing])
        if others.any():
            redundancy = kb[:, others].max(axis=1)
    form_vecs = None
    if form is not None:
        refs = list(dict.fromkeys([source, *form_references]))
        encoded = form.encoder.encode([*refs, *(p.text for p in fresh)])
        form_vecs = encoded[len(refs):]
        alive &= (form_vecs @ encoded[: len(refs)].T).max(axis=1) < form.threshold
    prior = np.array([SOURCE_PRIOR.get(p.source, 0.0) for p in fresh])
    kept: list[Candidate] = []
    while len(kept) < n and alive.any():
        mmr = (1 - diversity) * relevance - diversity * redundancy + prior
        i = int(np.argmax(np.where(alive, mmr, -np.inf)))
        alive[i] = False
        nearest = classify(fresh[i].text) if classify else None
        if own_intent and nearest != own_intent:
            continue
        kept.append(Candidate(fresh[i].text, round(float(relevance[i]), 4), nearest, fresh[i].source, round(float(mmr[i]), 4)))
        to_kept = cand @ cand[i]
        alive &= to_kept < near_duplicate
        if form_vecs is not None:
            alive &= form_vecs @ form_vecs[i] < form.threshold  # type: ignore[union-attr]
        redundancy = np.maximum(redundancy, to_kept)
    return kept


def check_method(method: str) -> None:
    if method not in METHODS:
        raise CallbotError("method must be beam or sample (the ALBERT-sim generator), rewrite, thesaurus or "
                           f"mixed (the default: {' + '.join(MIXED_SOURCES)}); got {method!r}.")


NEGATIONS = "不没别非无未甭"


def plausible(source: str, candidate: str, attested: frozenset[str]) -> bool:
    """A generated candidate that reads as a question rather than a loop or an invented word: no Chinese
    character more often than in the source plus one (你是哪位哪你哪, 我要投诉我投诉，我投诉), and every word of
    two or more characters (jieba) is in the source or ``attested`` (the knowledge base's words: 逆回债 and
    出卖 are not how this firm or its callers say 逆回购 or 卖出)."""
    have = Counter(source)
    if any(n > have[ch] + 1 for ch, n in Counter(candidate).items() if "\u4e00" <= ch <= "\u9fff"):
        return False
    # A negation the source does not have turns the request around (我要投诉 → 我不投诉), yet sits close to it in
    # vector space, so the judge accepts it: never from a generator.
    if any(candidate.count(ch) > have[ch] for ch in NEGATIONS):
        return False
    own = _words(source)  # the same source for every candidate of one expansion: segmented once

    def word_ok(w: str) -> bool:  # jieba joins known words into one (股票买卖): two known halves are fine
        return w in own or w in attested or any((w[:i] in own or w[:i] in attested) and (w[i:] in own or w[i:] in attested)
                                                for i in range(2, len(w) - 1))

    return all(word_ok(w) for w in _words(candidate) if len(w) >= 2 and all("\u4e00" <= ch <= "\u9fff" for ch in w))


@lru_cache(maxsize=256)
def _words(text: str) -> frozenset[str]:
    from nlu.rewrites import _jieba

    return frozenset(_jieba().lcut(text))


def propose(source: str, method: str, load_generator: Callable[[], Generator] | None, n: int,
            attested: frozenset[str] | None = None, siblings: Sequence[str] = ()) -> tuple[list[Proposal], list[str]]:
    """Raw candidates of ``method`` for ``source``, and notes on sources that were skipped. The
    generator is loaded only when a method needs it; with ``mixed`` a missing one is a note, not an error.
    ``attested``: the words thesaurus swaps and generated candidates may bring in (nlu.rewrites.vocabulary);
    ``siblings``: other questions of the source's intent, which the spoken rewrites also start from (each
    rewrite of a sibling is a new wording of the same request; the filter drops near-copies of any of them)."""
    check_method(method)
    sources = MIXED_SOURCES if method == "mixed" else (method,)
    out: list[Proposal] = []
    notes: list[str] = []
    for s in sources:
        if s in ("beam", "sample"):
            try:
                if load_generator is None:
                    raise ExpanderUnavailable("no generator was given")
                generator = load_generator()
            except CallbotError as exc:
                if method != "mixed":
                    raise
                notes.append(f"beam skipped: {exc}")
                continue
            texts = generator.beam(source, n) if s == "beam" else generator.sample(source, n)
            if attested is not None:
                texts = [t for t in texts if plausible(source, t, attested)]
            out += [Proposal(t, s) for t in texts]
        elif s == "rewrite":
            per_seed = [spoken_rewrites(source), *(spoken_rewrites(q, limit=30) for q in siblings)]
            out += [p for p in chain.from_iterable(zip_longest(*per_seed)) if p is not None]
        else:
            out += thesaurus_swaps(source, attested=attested)
    if {"rewrite", "thesaurus"} & set(sources) and not re.search(r"[\u4e00-\u9fff]", source):
        notes.append("rewrites and thesaurus swaps need a Chinese question; this text has no Chinese.")
    return out, notes


def kb_questions(matcher, scenario: str | None) -> tuple[list[str], list[str], np.ndarray, object]:  # type: ignore[no-untyped-def]
    """The questions in ``scenario``'s scope (texts, their intents, vectors) and the encoder of those
    vectors: from the matcher's vector cache, so an expansion does not re-encode the knowledge base."""
    scopes = matcher._scope_names(scenario)
    encoder = matcher.encoder_for(scopes[0])
    entries = [e for name in scopes for e in matcher._scopes[name].entries]
    texts = [e.text for e in entries]
    cache = matcher._cache(encoder)
    missing = [t for t in dict.fromkeys(texts) if t not in cache.vectors]  # a scope under another encoder
    extra = dict(zip(missing, encoder.encode(missing), strict=True)) if missing else {}
    vecs = np.stack([cache.vectors[t] if t in cache.vectors else extra[t] for t in texts]) if texts \
        else np.zeros((0, encoder.dim), np.float32)
    return texts, [e.intent for e in entries], vecs, encoder


SIBLINGS = 8  # questions of the source's intent the spoken rewrites also start from


def sibling_questions(source: str, intent: str | None, texts: list[str], intents: list[str], vecs: np.ndarray,  # type: ignore[no-untyped-def]
                      encoder, k: int = SIBLINGS) -> list[str]:
    """The ``k`` questions of ``intent`` closest to ``source`` (serving encoder), the source itself aside."""
    if not intent:
        return []
    own = [i for i, (t, it) in enumerate(zip(texts, intents, strict=True)) if it == intent and canonical(t) != canonical(source)]
    if not own:
        return []
    scores = vecs[own] @ encoder.encode([source])[0]
    return list(dict.fromkeys(texts[own[j]] for j in np.argsort(-scores)[:k]))


def expand_with(matcher, text: str, n: int = 20, method: str = "mixed", scenario: str | None = None,  # type: ignore[no-untyped-def]
                intent: str | None = None, load_generator: Callable[[], Generator] | None = None,
                exclude: Sequence[str] = (), form: FormCheck | None = None) -> Expansion:
    """Generate, filter and rank paraphrases of ``text`` against ``matcher``'s knowledge base.

    ``intent``: keep only candidates the matcher places in it (default: the intent whose question
    ``text`` is, when it is one). ``exclude``: further texts that count as existing (the intent's
    pending and rejected questions: staff have seen them already). ``form``: judge near-copies with that
    encoder too (see FormCheck; nlu.service.form_check gives e5-small whenever another encoder serves)."""
    from nlu.text import normalise

    check_method(method)
    if not 1 <= n <= 100:
        raise CallbotError("n must be between 1 and 100.")
    source = normalise(text)
    if len(source) > MAX_QUESTION:
        raise CallbotError(f"text is {len(source)} characters; expansion paraphrases one question of at most "
                           f"{MAX_QUESTION} characters (an extension question's limit).")
    texts, intents, vecs, encoder = kb_questions(matcher, scenario)
    if intent and intent not in intents:
        raise CallbotError(f"Intent {intent!r} is not in scope {scenario or 'all scenarios'}; `callbot kb export --scenario …` lists intents.")
    if intent is None:
        owners = {i for t, i in zip(texts, intents, strict=True) if canonical(t) == canonical(source)}
        intent = owners.pop() if len(owners) == 1 else None
    attested = vocabulary(tuple(texts)) if method in ("mixed", "thesaurus", "beam", "sample") else None
    raw, notes = propose(source, method, load_generator, n, attested, sibling_questions(source, intent, texts, intents, vecs, encoder))

    def nearest(candidate: str) -> str | None:
        result = matcher.match(candidate, scenario, k=2)
        return result.top.intent if result.top and result.decision != "fallback" else None

    existing = [*texts, *exclude]
    existing_vecs = np.concatenate([vecs, encoder.encode(list(exclude))]) if exclude else vecs
    kept = filter_and_rank(source, raw, encoder, existing, nearest if intent else None, intent, n=n,
                           existing_vecs=existing_vecs, form=form,
                           form_references=[*(t for t, i in zip(texts, intents, strict=True) if i == intent), *exclude])
    return Expansion(method, kept, dict(Counter(p.source for p in raw)), notes)
