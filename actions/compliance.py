"""The compliance guard: every outgoing bot text is checked against the knowledge base's rule lexicon.

A ``block`` rule stops the text from being sent (the caller hears a safe line instead, and the
incident is logged with the rule id); a ``warn`` rule lets it through but is logged. Rules are
reloaded when the knowledge-base version changes.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

from sqlalchemy import select

from knowledge_base.db import Store
from knowledge_base.models import ComplianceRule, MatchType, Severity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Violation:
    rule_id: str
    severity: str
    matched: str
    description: str
    legal_basis: str


@dataclass(frozen=True)
class _CompiledRule:
    rule_id: str
    pattern: re.Pattern[str]
    severity: str
    description: str
    legal_basis: str


class ComplianceGuard:
    def __init__(self, store: Store):
        self.store = store
        self._rules: list[_CompiledRule] = []
        self._version: int | None = None
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        version = self.store.kb_version()
        if version == self._version:
            return
        with self._lock, self.store.session() as s:
            rules = []
            for r in s.scalars(select(ComplianceRule).where(ComplianceRule.enabled.is_(True))):
                text = r.pattern if r.match_type == MatchType.regex else re.escape(r.pattern)
                try:
                    rules.append(_CompiledRule(r.rule_id, re.compile(text), r.severity.value, r.description, r.legal_basis))
                except re.error:
                    log.error("compliance rule does not compile; skipped", extra={"fields": {"rule_id": r.rule_id}})
            self._rules, self._version = rules, version

    def check(self, text: str) -> list[Violation]:
        self._refresh()
        found = []
        for rule in self._rules:
            m = rule.pattern.search(text)
            if m:
                found.append(Violation(rule.rule_id, rule.severity, m.group(0), rule.description, rule.legal_basis))
        return found

    def blocks(self, text: str) -> list[Violation]:
        return [v for v in self.check(text) if v.severity == Severity.block.value]
