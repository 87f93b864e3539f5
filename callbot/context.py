"""Builds the long-lived objects (store, knowledge base) from settings, once per process."""

from __future__ import annotations

from functools import lru_cache

from callbot.settings import get_settings
from knowledge_base.db import Store
from knowledge_base.service import KnowledgeBase


@lru_cache(maxsize=1)
def get_store() -> Store:
    settings = get_settings()
    return Store(settings.db_url, settings.sqlite_busy_timeout_s)


def get_kb() -> KnowledgeBase:
    from nlu.compliance.service import publish_check

    # What staff publish (answers, script prompts) passes the compliance guard first.
    return KnowledgeBase(get_store(), publish_check)
