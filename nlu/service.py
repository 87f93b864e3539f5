"""The process-wide matcher: encoder resolved from settings, thresholds stored with the model."""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from callbot.context import get_store
from callbot.settings import get_settings
from nlu.matcher import Matcher, Thresholds
from nlu.model_cache import quantization_for, resolve_model

log = logging.getLogger(__name__)


def load_encoder(name: str):  # type: ignore[no-untyped-def]
    from nlu.encoders.sentence_encoder import SentenceEncoder

    settings = get_settings()
    path = resolve_model(settings.models_dir, name, get_store().intent_keys() if name == "auto" else None)
    return SentenceEncoder(path, quantize=quantization_for(path, settings.nlu.quantize)), path


def vector_dir(db_url: str) -> Path:
    """One vector cache per database: two knowledge bases never evict each other's vectors."""
    return get_settings().cache_dir / "vectors" / hashlib.sha1(db_url.encode()).hexdigest()[:10]


@lru_cache(maxsize=4)
def get_matcher(model: str | None = None) -> Matcher:
    settings = get_settings()
    encoder, path = load_encoder(model or settings.nlu.model)
    scope_encoders = {}
    if settings.nlu.use_scenario_models:
        from nlu.encoders.sentence_encoder import SentenceEncoder

        for ft in sorted(settings.models_dir.glob("albert-sim-ft-*/callbot_encoder.json")):
            scenario = ft.parent.name.removeprefix("albert-sim-ft-")
            scope_encoders[scenario] = SentenceEncoder(ft.parent, quantize=quantization_for(ft.parent, settings.nlu.quantize))
    heads = settings.nlu.heads(Path(path))
    matcher = Matcher(get_store(), encoder, vector_dir(settings.db_url), Thresholds.for_model(Path(path)),
                      exact_index_limit=settings.nlu.exact_index_limit, scope_encoders=scope_encoders,
                      search_threads=settings.nlu.search_threads, **heads)
    _warn_if_calibrated_otherwise(Path(path), matcher.thresholds, heads)
    matcher.refresh(force=True)
    return matcher


def _warn_if_calibrated_otherwise(model_dir: Path, thresholds: Thresholds, heads: dict[str, Any]) -> None:
    """The lexical head moves the scores the thresholds judge: thresholds calibrated with another weight, another
    shortest reply it reads or without its sound grams reject or accept the wrong share of messages. Say so, and how
    to fix it."""
    if not (model_dir / "thresholds.json").is_file():
        return  # no thresholds: Thresholds.for_model has said so
    calibrated = {"lexical_head_weight": thresholds.lexical_head_weight, "lexical_min_chars": thresholds.lexical_min_chars,
                  "lexical_sound": thresholds.lexical_sound}
    differ = {k: {"calibrated": v, "served": heads.get(k)} for k, v in calibrated.items()
              if heads.get(k) is not None and (abs(float(v) - float(heads[k])) > 1e-9)}
    if differ:
        log.warning("thresholds were calibrated with another lexical head setting",
                    extra={"fields": {"model": model_dir.name, "settings": differ,
                                      "fix": f"callbot model tune-lexical {model_dir.name} (or unset nlu.lexical_* to serve the calibrated ones)"}})


@lru_cache(maxsize=1)
def get_generator():  # type: ignore[no-untyped-def]
    """The generation head of a pair-trained ALBERT-sim (expansion needs GenF training): the one named by
    ``nlu.generator``, or with ``auto`` the one nlu.generation_quality.best_generator picks."""
    from nlu.expansion import ExpanderUnavailable, Generator
    from nlu.generation_quality import best_generator

    settings = get_settings()
    models_dir = settings.models_dir
    if settings.nlu.generator != "auto":
        return Generator(resolve_model(models_dir, settings.nlu.generator), copy_bias=settings.nlu.copy_bias)
    chosen = best_generator(models_dir, settings.nlu.copy_bias)
    if chosen is None:
        raise ExpanderUnavailable(
            f"No trained ALBERT-sim in {models_dir}; run `callbot model distill` then `callbot model train --pairs …` "
            "to enable paraphrase generation."
        )
    return Generator(chosen, copy_bias=settings.nlu.copy_bias)


@lru_cache(maxsize=1)
def _form_encoder():  # type: ignore[no-untyped-def]
    from nlu.encoders.sentence_encoder import SentenceEncoder
    from nlu.model_cache import e5_dir

    return SentenceEncoder(e5_dir(get_settings().models_dir))


def form_check(matcher: Matcher):  # type: ignore[no-untyped-def]
    """What judges near-copies in an expansion (nlu.expansion.FormCheck): e5-small when another encoder
    serves, None when e5-small serves (its own 0.98 check over the knowledge base already applies)."""
    from nlu.expansion import FormCheck

    if Path(getattr(matcher.encoder, "path", "")).name.startswith("e5-"):
        return None
    return FormCheck(_form_encoder())


def expand(text: str, n: int = 20, method: str = "mixed", scenario: str | None = None, intent: str | None = None,  # type: ignore[no-untyped-def]
           exclude: tuple[str, ...] = ()):
    """Generate, filter and rank paraphrases of ``text`` with the serving matcher and, where the method
    uses one, the configured generator (see nlu.expansion.expand_with). Returns an Expansion."""
    from nlu.expansion import check_method, expand_with

    check_method(method)  # before loading anything
    matcher = get_matcher()
    matcher.refresh()
    return expand_with(matcher, text, n, method, scenario, intent, get_generator, exclude, form_check(matcher))


def mine_conversations(since=None, scenario: str | None = None, limit: int = 50, min_conversations: int = 1,  # type: ignore[no-untyped-def]
                       store_as_pending: bool = False, actor: str = "miner", progress: bool = False) -> dict:
    """Propose extension questions from recorded caller turns (nlu.mining); with ``store_as_pending``
    they become ``pending`` questions (source ``mined``) in the staff review queue."""
    from callbot.context import get_kb, get_store
    from knowledge_base.errors import CallbotError
    from knowledge_base.models import QuestionSource, ReviewStatus
    from nlu.mining import caller_utterances, mine

    if not 1 <= limit <= 1000:
        raise CallbotError("limit must be between 1 and 1000.")
    if min_conversations < 1:
        raise CallbotError("min_conversations must be at least 1.")
    store = get_store()
    report = mine(get_matcher(), store, caller_utterances(store, since, scenario), limit=limit,
                  min_conversations=min_conversations, progress=progress)
    out = report.as_dict()
    if store_as_pending:
        kb, stored = get_kb(), []
        for m in report.proposed:
            try:
                stored.append(kb.add_question(m.intent_id, m.text, author=actor, source=QuestionSource.mined,
                                              status=ReviewStatus.pending) | {"conversations": m.conversations})
            except CallbotError:  # the same wording proposed from two scenarios for one shared FAQ
                continue
        out["stored"] = stored
    return out
