"""Weight-space interpolation of two checkpoints of one ALBERT-sim (WiSE-FT, Wortsman et al. 2022).

The KB stage fits the knowledge base's own wordings; measured on wordings by other writers it loses what the
pair stage had (docs/nlu.md). Interpolating the fine-tuned weights with those they started from keeps part of
each: the paper found the blend more robust under distribution shift than either end, at no training cost.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from knowledge_base.errors import CallbotError

MODEL_FILE = "model.safetensors"
COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json")


def interpolate(start: Path, tuned: Path, out: Path, alpha: float) -> Path:
    """Write ``(1 - alpha) * start + alpha * tuned`` to ``out``; alpha 1 is the tuned model, 0 the start."""
    from safetensors.torch import load_file, save_file

    if not 0.0 <= alpha <= 1.0:
        raise CallbotError(f"alpha {alpha:g} must lie between 0 (the start model) and 1 (the tuned one).")
    for d in (start, tuned):
        if not (d / MODEL_FILE).is_file():
            raise CallbotError(f"{d} has no {MODEL_FILE}: give the directory of a trained ALBERT-sim.")
    a, b = load_file(str(start / MODEL_FILE)), load_file(str(tuned / MODEL_FILE))
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise CallbotError(f"{start.name} and {tuned.name} have different shapes: only checkpoints of one model blend.")
    blended = {k: ((1 - alpha) * a[k].float() + alpha * b[k].float()).to(b[k].dtype).contiguous()
               if b[k].is_floating_point() else b[k] for k in b}
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copy2(tuned / name, out / name)
    save_file(blended, str(out / MODEL_FILE), metadata={"format": "pt"})
    meta = json.loads((tuned / "callbot_encoder.json").read_text())
    meta["name"] = out.name
    meta["data"] = list(meta.get("data", [])) + [f"weights blended: {1 - alpha:g} × {start.name} + {alpha:g} × {tuned.name} (WiSE-FT)"]
    meta["soup"] = {"start": start.name, "tuned": tuned.name, "alpha": alpha}
    (out / "callbot_encoder.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2))
    for stale in ("thresholds.json", "verified.json", "verified.int8.json", "quality.json"):
        (out / stale).unlink(missing_ok=True)
    return out
