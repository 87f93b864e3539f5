"""Intent-matching evaluation on labelled utterances: top-k accuracy, per-intent recall, confusions."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from knowledge_base.errors import CallbotError
from nlu.matcher import Matcher


def read_labelled(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise CallbotError(f"Test file {path} does not exist.")
    items, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{n}: not JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict) or not obj.get("text") or not obj.get("intent"):
            problems.append(f'{path}:{n}: needs "text" and "intent" (and optionally "scenario")')
            continue
        items.append(obj)
    if problems:
        raise CallbotError("Bad test file:\n" + "\n".join(problems[:20]))
    if not items:
        raise CallbotError(f"{path} has no labelled utterances.")
    return items


def evaluate_items(matcher: Matcher, items: list[dict[str, Any]]) -> dict[str, Any]:
    hits = Counter()
    per_intent: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    confusions: Counter[tuple[str, str]] = Counter()
    decisions: Counter[str] = Counter()
    for item in tqdm(items, desc="evaluating", unit="utt", disable=len(items) < 50):
        result = matcher.match(item["text"], item.get("scenario"), k=3)
        names = [r.intent for r in result.ranking]
        gold = item["intent"]
        decisions[result.decision] += 1
        for k in (1, 2, 3):
            hits[k] += gold in names[:k]
        per_intent[gold][1] += 1
        if names[:1] == [gold]:
            per_intent[gold][0] += 1
        elif names:
            confusions[(gold, names[0])] += 1
    n = len(items)
    return {
        "model": matcher.encoder.name, "kb_version": matcher.kb_version, "n": n,
        "top1": round(hits[1] / n, 4), "top2": round(hits[2] / n, 4), "top3": round(hits[3] / n, 4),
        "decisions": dict(decisions),
        "per_intent_recall": {k: round(v[0] / v[1], 4) for k, v in sorted(per_intent.items())},
        "confusions": [{"gold": g, "predicted": p, "count": c} for (g, p), c in confusions.most_common(30)],
    }


def evaluate_file(matcher: Matcher, path: Path) -> dict[str, Any]:
    return evaluate_items(matcher, read_labelled(path))
