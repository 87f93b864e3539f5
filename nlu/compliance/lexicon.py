"""The first stage of the compliance guard: the knowledge base's rule lexicon (literal and regex rules).

Fast, and it explains itself: each hit names its rule and the exact span. Rules are reloaded when the knowledge-base
version changes, so a compliance officer's edit applies on the next check. Rules of match type ``semantic`` are not
patterns: they name a class of the classifier (nlu/compliance/classifier.py) and carry that class's severity and
legal basis.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from knowledge_base.db import Store
from knowledge_base.models import ComplianceRule, MatchType, Severity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One violation: which rule, how severe, where (character offsets into the checked text), how sure."""
    rule_id: str
    severity: str
    matched: str
    description: str
    legal_basis: str
    start: int = 0
    end: int = 0
    score: float = 1.0
    source: str = "lexicon"  # lexicon | classifier


@dataclass(frozen=True)
class RuleInfo:
    rule_id: str
    severity: str
    description: str
    legal_basis: str


@dataclass(frozen=True)
class _CompiledRule:
    info: RuleInfo
    pattern: re.Pattern[str]


class RuleLexicon:
    def __init__(self, store: Store | None):
        self.store = store
        self._rules: list[_CompiledRule] = []
        self.semantic: dict[str, RuleInfo] = {}  # classifier class → its rule
        self._version: int | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        if self.store is None:
            return  # built from a session's rules (RuleLexicon.of_session): fixed
        version = self.store.kb_version()
        if version == self._version:
            return
        with self._lock, self.store.session() as s:
            self._load(s)
            self._version = version

    @classmethod
    def of_session(cls, session: Session) -> RuleLexicon:
        """The rules as an open transaction sees them (an import checks its texts against the rules it brings)."""
        lexicon = cls(None)
        lexicon._load(session)
        return lexicon

    def _load(self, s: Session) -> None:
        rules, semantic = [], {}
        for r in s.scalars(select(ComplianceRule).where(ComplianceRule.enabled.is_(True)).order_by(ComplianceRule.rule_id)):
            info = RuleInfo(r.rule_id, Severity(r.severity).value, r.description, r.legal_basis)
            if r.match_type == MatchType.semantic:
                semantic.setdefault(r.pattern.strip(), info)
                continue
            try:
                rules.append(_CompiledRule(info, r.compiled()))
            except re.error:
                log.error("compliance rule does not compile; skipped", extra={"fields": {"rule_id": r.rule_id}})
        self._rules, self.semantic = rules, semantic

    def scan(self, text: str, refresh: bool = True) -> list[Hit]:
        """Every rule's first match in ``text``, with its span. ``refresh=False`` when the caller refreshed already
        (the guard does once per batch, not once per sentence: the version check is a database query)."""
        if refresh:
            self.refresh()
        found = []
        for rule in self._rules:
            m = rule.pattern.search(text)
            if m:
                i = rule.info
                found.append(Hit(i.rule_id, i.severity, m.group(0), i.description, i.legal_basis, m.start(), m.end()))
        return found
