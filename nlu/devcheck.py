"""Compare models on the held-out *dev* split without touching the test split.

Thresholds are calibrated on the dev split, so measuring a model on the same dev utterances flatters it. Here
each model is calibrated on one half of dev and judged on the other, both ways (two-fold cross-fitting), and the
judgements pooled: a fair figure for choosing between training variants, leaving the test split for the one
final comparison (`callbot model verify`).

    python -m nlu.devcheck e5-small-v1 albert-sim-candidate …   (model directory names in the model cache)
    CALLBOT_NLU__INTENT_HEAD_WEIGHT=0.03 python -m nlu.devcheck albert-sim-release   (with the intent head)
    CALLBOT_NLU__LEXICAL_HEAD_WEIGHT=0 python -m nlu.devcheck albert-sim-release   (without the lexical head)
    python -m nlu.devcheck albert-sim-release --misses var/dev_misses.jsonl   (every wrong judgement, for curating)

The misses file lists each wrong out-of-fold judgement as a JSON line (model, set, mode, text, gold intent,
decision, top two intents, top score): what a KB writer reads to add wordings *of the same kinds* — never the
sentences themselves.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nlu import heldout


def fold_of(text: str) -> int:
    return hashlib.md5(text.encode("utf-8")).digest()[0] % 2


def crossfit(matcher: Any, utterances: list[heldout.HeldoutUtterance]) -> list[heldout.Judged]:
    from nlu.calibration import calibrate
    from nlu.data.kb_split import is_clean_query

    skip = heldout.kb_texts(matcher)
    judged: list[heldout.Judged] = []
    for fold in (0, 1):
        fit = [u for u in utterances if fold_of(u.text) != fold]
        held = [u for u in utterances if fold_of(u.text) == fold]
        matcher.thresholds, _ = calibrate(matcher, only=lambda e: is_clean_query(e.text), dev=fit)
        judged += heldout.judge(matcher, held, skip)
    return judged


def pooled(judged: list[heldout.Judged]) -> dict[str, Any]:
    ind = [j.correct for j in judged if j.utterance.intent is not None]
    ood = [j.predicted is None for j in judged if j.utterance.intent is None]
    summary = heldout.summarise(judged)
    keys = [k for k in summary if k.endswith(("_accuracy", "_rejected", "_top1", "_fallback"))]
    return {"pooled_accuracy": round(float(np.mean(ind)), 4), "pooled_n": len(ind),
            "chatter_rejected": round(float(np.mean(ood)), 4) if ood else None, **{k: summary[k] for k in keys}}


def miss_record(model: str, j: heldout.Judged) -> dict[str, Any]:
    u = j.utterance
    return {"model": model, "set": u.set_name, "mode": j.mode, "scenario": u.scenario, "text": u.text,
            "intent": u.intent, "predicted": j.predicted, "decision": j.decision, "top": j.top, "second": j.second,
            "top_score": round(j.top_score, 4)}


def judge_model(path: Path, store: Any, settings: Any, utterances: list[heldout.HeldoutUtterance]) -> list[heldout.Judged]:
    """Cross-fitted judgements of the model at ``path`` on ``utterances``, as served (heads per the settings)."""
    from nlu.encoders.memo import MemoEncoder
    from nlu.encoders.sentence_encoder import SentenceEncoder
    from nlu.matcher import Matcher

    # Cross-fitting encodes each dev sentence in both folds: remembered once.
    matcher = Matcher(store, MemoEncoder(SentenceEncoder(path)), settings.cache_dir / "vectors" / "devcheck",
                      **settings.nlu.heads(path))
    matcher.refresh(force=True)
    matcher.wait_for_intent_head()
    return crossfit(matcher, utterances)


def main(names: list[str], misses: Path | None = None) -> None:
    from callbot.context import get_settings, get_store

    settings = get_settings()
    store = get_store()
    utterances = heldout.load("dev")
    rows = {}
    for name in names:
        judged = judge_model(settings.models_dir / name, store, settings, utterances)
        rows[name] = pooled(judged)
        if misses is not None:
            with misses.open("a", encoding="utf-8") as out:
                for j in judged:
                    if (not j.correct) if j.utterance.intent is not None else j.predicted is not None:
                        out.write(json.dumps(miss_record(name, j), ensure_ascii=False) + "\n")
        print(name, rows[name], flush=True)
    keys = sorted({k for r in rows.values() for k in r})
    print("\n| measure | " + " | ".join(rows) + " |\n| --- |" + " --- |" * len(rows))
    for k in keys:
        print(f"| {k} | " + " | ".join(str(r.get(k, "")) for r in rows.values()) + " |")


if __name__ == "__main__":
    if not sys.argv[1:] or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if sys.argv[1:] else 2)
    args = sys.argv[1:]
    misses_path = None
    if "--misses" in args:
        i = args.index("--misses")
        if i + 1 >= len(args):
            sys.exit("devcheck: --misses needs a file path, e.g. --misses var/dev_misses.jsonl")
        misses_path = Path(args[i + 1])
        misses_path.parent.mkdir(parents=True, exist_ok=True)
        misses_path.write_text("", encoding="utf-8")
        del args[i:i + 2]
    try:
        main(args, misses_path)
    except Exception as exc:  # ModelFilesMissing and the like: say which model and how to fix it, no traceback
        from knowledge_base.errors import CallbotError

        if not isinstance(exc, CallbotError | OSError | ValueError):
            raise
        sys.exit(f"devcheck: {exc}")
