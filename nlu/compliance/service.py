"""The product's compliance guard, built once per process from the settings: the knowledge base's rules, the
sentence encoder of ``compliance.encoder`` (the released ALBERT-sim, adapted to sales talk by masked-LM steps when
``compliance.adapt_steps`` asks for it; e5-small, which every installation has, when no release is installed) and the
classifier head trained on it into ``cache_dir/compliance``."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from knowledge_base.db import Store
from nlu.compliance.guard import ComplianceGuard

log = logging.getLogger(__name__)
_guards: dict[str, ComplianceGuard] = {}
_lock = threading.Lock()
FALLBACK_ENCODER = "e5-small"


def head_dir(cache_dir: Path) -> Path:
    return cache_dir / "compliance"


def base_encoder_path(models_dir: Path) -> Path:
    """The checkpoint named by ``compliance.encoder`` (e5-small when it is not installed)."""
    from callbot.settings import get_settings
    from nlu.model_cache import ModelNotBuilt, resolve_model

    cfg = get_settings().compliance
    try:
        return resolve_model(models_dir, cfg.encoder)
    except ModelNotBuilt:
        if cfg.encoder == FALLBACK_ENCODER:
            raise
        log.warning("compliance encoder not installed; e5-small judges instead (retrain the head with "
                    "`callbot compliance train`)", extra={"fields": {"encoder": cfg.encoder}})
        return resolve_model(models_dir, FALLBACK_ENCODER)


def wanted_adaptation(base: Path) -> dict[str, Any] | None:
    """What the adapted encoder must have been built from and with, or None when the settings ask for none (or the
    base cannot be adapted: only an ALBERT-sim carries a masked-LM head)."""
    from callbot.settings import get_settings
    from nlu.compliance.adapt import adaptable

    cfg = get_settings().compliance
    if cfg.adapt_steps <= 0 or not adaptable(base):
        return None
    return {"parent_sha256": weights_sha256(base), "steps": cfg.adapt_steps, "keep_weight": cfg.adapt_keep_weight}


def weights_sha256(model_dir: Path) -> str:
    from nlu.release import sha256

    return sha256(model_dir / "model.safetensors")


def adapted_dir(cache_dir: Path) -> Path:
    return head_dir(cache_dir) / "encoder"


def adapted_is_current(directory: Path, wanted: dict[str, Any]) -> bool:
    meta_file = directory / "callbot_encoder.json"
    if not (directory / "model.safetensors").is_file() or not meta_file.is_file():
        return False
    made = json.loads(meta_file.read_text()).get("compliance_adaptation") or {}
    return all(made.get("key", {}).get(k) == v for k, v in wanted.items())


def compliance_encoder(models_dir: Path):  # type: ignore[no-untyped-def]
    """The configured encoder, float32 by default (the head is trained on the same vectors it is served with):
    the adapted one when the settings ask for it and `callbot compliance train` has built it from this base."""
    from callbot.settings import get_settings
    from nlu.encoders.sentence_encoder import shared_encoder

    settings = get_settings()
    path = base_encoder_path(models_dir)
    wanted = wanted_adaptation(path)
    if wanted is not None:
        if adapted_is_current(adapted_dir(settings.cache_dir), wanted):
            path = adapted_dir(settings.cache_dir)
        else:
            log.warning("compliance encoder not adapted to sales talk yet; the released one serves (run "
                        "`callbot compliance train`)", extra={"fields": {"base": path.name}})
    # No thread setting: the process's torch setting stays as the NLU service configured it.
    return shared_encoder(path, settings.compliance.quantize)


def get_guard(store: Store, lexicon_only: bool = False) -> ComplianceGuard:
    """One guard per database and mode; the encoder loads on first use. ``lexicon_only`` when the classifier's
    weights must not be loaded (a process without the model cache)."""
    from callbot.settings import get_settings

    key = f"{store.url}|{lexicon_only}"
    with _lock:
        if key not in _guards:
            if lexicon_only:
                _guards[key] = ComplianceGuard(store)
            else:
                from nlu.compliance.classifier import META_FILE

                settings = get_settings()
                directory = head_dir(settings.cache_dir)
                if not (directory / META_FILE).is_file():
                    # No classifier trained here: the encoder would only cost memory and start-up time.
                    log.warning("no trained compliance classifier; the rule lexicon alone guards "
                                "(`callbot compliance train` builds one)", extra={"fields": {"dir": str(directory)}})
                    _guards[key] = ComplianceGuard(store)
                else:
                    _guards[key] = ComplianceGuard(store, compliance_encoder(settings.models_dir), directory)
        return _guards[key]


def publish_check(session, texts: list[tuple[str, str]]) -> list[str]:  # type: ignore[no-untyped-def]
    """The knowledge base's gate (KnowledgeBase.publish_check): a text the guard would block is not published. The
    rules are read in the import's own transaction; without an encoder in the cache the lexicon alone checks."""
    from callbot.context import get_store
    from nlu.compliance.lexicon import RuleLexicon

    if not texts:
        return []
    try:
        guard = get_guard(get_store())
    except Exception:  # noqa: BLE001 - no encoder in the cache (before `callbot model base`): the lexicon still checks
        guard = get_guard(get_store(), lexicon_only=True)
    verdicts = guard.verdicts([t for _w, t in texts], lexicon=RuleLexicon.of_session(session))
    problems = []
    for (where, text), verdict in zip(texts, verdicts, strict=True):
        for hit in verdict.blocking():
            problems.append(f"{where}: {hit.rule_id} ({hit.description}) at \"{text[hit.start:hit.end][:60]}\"; "
                            "reword it (the rule's suggestion is in the knowledge base) or ask the compliance officer.")
    return problems
