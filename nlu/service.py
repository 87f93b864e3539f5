"""The process-wide matcher: encoder resolved from settings, thresholds stored with the model."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from callbot.context import get_store
from callbot.settings import get_settings
from nlu.matcher import Matcher, Thresholds
from nlu.model_cache import resolve_model


def load_encoder(name: str):  # type: ignore[no-untyped-def]
    from nlu.encoders.sentence_encoder import SentenceEncoder

    path = resolve_model(get_settings().models_dir, name)
    return SentenceEncoder(path), path


@lru_cache(maxsize=4)
def get_matcher(model: str | None = None) -> Matcher:
    settings = get_settings()
    encoder, path = load_encoder(model or settings.nlu.model)
    matcher = Matcher(get_store(), encoder, settings.cache_dir / "vectors", Thresholds.for_model(Path(path)),
                      exact_index_limit=settings.nlu.exact_index_limit)
    matcher.refresh(force=True)
    return matcher
