"""Multi-label scores as the seed reports them: micro and macro P/R/F1 over all labels and over tail labels."""

from __future__ import annotations

from typing import Any

import numpy as np


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def label_scores(y_true: np.ndarray, y_pred: np.ndarray, codes: list[str], train_counts: list[int]) -> dict[str, dict[str, Any]]:
    out = {}
    for j, code in enumerate(codes):
        t, p = y_true[:, j] > 0, y_pred[:, j] > 0
        tp, fp, fn = float((t & p).sum()), float((~t & p).sum()), float((t & ~p).sum())
        prec, rec, f1 = _prf(tp, fp, fn)
        out[code] = {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4),
                     "support": int(t.sum()), "train_count": int(train_counts[j])}
    return out


def _group(y_true: np.ndarray, y_pred: np.ndarray, cols: list[int], per_label: list[dict[str, Any]]) -> dict[str, float]:
    t, p = y_true[:, cols] > 0, y_pred[:, cols] > 0
    mp, mr, mf = _prf(float((t & p).sum()), float((~t & p).sum()), float((t & ~p).sum()))
    scored = [per_label[c] for c in cols if per_label[c]["support"] > 0]  # a label absent from the test set has no F1

    def mean(key: str) -> float:
        return float(np.mean([s[key] for s in scored])) if scored else 0.0

    return {"micro_precision": round(mp, 4), "micro_recall": round(mr, 4), "micro_f1": round(mf, 4),
            "macro_precision": round(mean("precision"), 4), "macro_recall": round(mean("recall"), 4),
            "macro_f1": round(mean("f1"), 4), "labels": len(scored)}


def multilabel_report(y_true: np.ndarray, y_pred: np.ndarray, codes: list[str], train_counts: list[int],
                      tail_below: int = 100) -> dict[str, Any]:
    per = label_scores(y_true, y_pred, codes, train_counts)
    rows = [per[c] for c in codes]
    tail = [j for j, n in enumerate(train_counts) if n < tail_below]
    everything = _group(y_true, y_pred, list(range(len(codes))), rows)
    tails = _group(y_true, y_pred, tail, rows) if tail else {}
    return {"micro_f1": everything["micro_f1"], "macro_f1": everything["macro_f1"],
            "tail_micro_f1": tails.get("micro_f1", 0.0), "tail_macro_f1": tails.get("macro_f1", 0.0),
            "all": everything, "tail": tails, "tail_below": tail_below, "tail_labels": [codes[j] for j in tail],
            "examples": int(len(y_true)), "per_label": per}
