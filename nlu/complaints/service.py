"""The product's installed complaint model (``cache_dir/complaints/model``), loaded once per process."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from knowledge_base.errors import CallbotError
from nlu.complaints.classifier import ComplaintModel

log = logging.getLogger(__name__)
DATA_DIR = Path(__file__).parent / "data"
TRAIN_FILE = DATA_DIR / "train.jsonl"
_lock = threading.Lock()
_models: dict[Path, tuple[float, ComplaintModel]] = {}


def installed_dir(cache_dir: Path) -> Path:
    return cache_dir / "complaints" / "model"


ENCODER, QUANTIZE = "e5-small", "int8"  # int8: 7.6 ms per complaint on one thread, float32 26 ms (docs/complaints.md)


def e5_loader(models_dir: Path):  # type: ignore[no-untyped-def]
    """The token-state encoder of ``--encoder e5`` models, shared with the compliance guard (same checkpoint)."""
    def load():  # type: ignore[no-untyped-def]
        from nlu.encoders.sentence_encoder import shared_encoder
        from nlu.model_cache import resolve_model

        return shared_encoder(resolve_model(models_dir, ENCODER), QUANTIZE)
    return load


def get_complaint_model(cache_dir: Path, models_dir: Path) -> ComplaintModel | None:
    """The installed model, reloaded when it is retrained; None (logged once) when none is installed."""
    directory = installed_dir(cache_dir)
    meta = directory / "complaint_model.json"
    with _lock:
        stamp = meta.stat().st_mtime if meta.is_file() else -1.0
        cached = _models.get(directory)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if stamp < 0:
            if cached is None or cached[0] != stamp:
                log.warning("no complaint model installed; complaints are labelled by the lexical baseline",
                            extra={"fields": {"dir": str(directory), "fix": "callbot complaint train"}})
            _models[directory] = (stamp, None)  # type: ignore[assignment]
            return None
        try:
            model = ComplaintModel.load(directory, e5_loader(models_dir))
        except CallbotError as exc:  # no such model, an old format, or its encoder missing from the model cache
            log.warning("complaint model unusable", extra={"fields": {"error": str(exc)}})
            model = None
        _models[directory] = (stamp, model)  # type: ignore[assignment]
        return model
