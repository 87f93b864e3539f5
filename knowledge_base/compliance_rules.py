"""The compliance rule book as staff edit it: list, add, change, switch off — with the checks an import applies.

Rules are never deleted from the console: a regulator asks which rule was in force when a line was blocked, and the
audit log (knowledge_base/db.py) keeps every change with its author; switching a rule off keeps that history whole.
A save bumps the knowledge-base version, so every process's guard (nlu/compliance/lexicon.py) reloads the rules on
its next check. The answer of a save lists the published answers and script prompts the rule now matches: a new
`block` rule that hits them makes the bot replace those lines with a safe one, and the officer should see that.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from knowledge_base.db import Store
from knowledge_base.errors import CallbotError, NotFound
from knowledge_base.models import COMPLIANCE_CLASSES, ComplianceRule, Intent, MatchType, Scenario, ScriptStep
from knowledge_base.schema import ComplianceRuleDoc

MAX_PATTERN_CHARS = 300
AFFECTED_SHOWN = 20
# A group holding a quantifier, itself repeated: (a+)+, (\w*)*, (.+){2,} — exponential backtracking in Python's re
# on a long reply, which would stall every bot turn behind the guard.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*](?:[^()\\]|\\.)*\)\s*(?:[+*]|\{\d*,\d*\})")
EDITABLE = ("pattern", "match_type", "severity", "legal_basis", "description", "suggestion", "enabled")


def rule_problems(rule: ComplianceRuleDoc) -> list[str]:
    """What is wrong with a rule, one sentence each with the fix (empty: the rule can be saved or imported)."""
    pattern = rule.pattern
    if rule.match_type == MatchType.semantic:
        if pattern.strip() not in COMPLIANCE_CLASSES:
            return [f"a semantic rule names a class of the compliance classifier: one of {', '.join(COMPLIANCE_CLASSES)}"]
        return []
    if len(pattern) > MAX_PATTERN_CHARS:
        return [f"the pattern is {len(pattern)} characters long; at most {MAX_PATTERN_CHARS} (split it into several rules)"]
    if rule.match_type == MatchType.literal:
        return [] if pattern.strip() else ["the pattern is empty: give the words the bot must never say"]
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return [f"regular expression does not compile: {exc}"]
    if compiled.search("") is not None:
        return ["the regular expression matches an empty text, so it would flag every line: make every part of it "
                "required (e.g. 保本|保收益, not (保本)?)"]
    if _NESTED_QUANTIFIER.search(pattern):
        return ["the regular expression repeats a group that itself repeats (like (a+)+): on a long reply it can take "
                "minutes and stall the bot; write the group without the inner + or *"]
    return []


class ComplianceRuleBook:
    def __init__(self, store: Store):
        self.store = store

    def rules(self) -> list[dict[str, Any]]:
        with self.store.session() as s:
            return [_as_dict(r) for r in s.scalars(select(ComplianceRule).order_by(ComplianceRule.rule_id))]

    def create(self, body: dict[str, Any], actor: str) -> dict[str, Any]:
        unknown = sorted(set(body) - {"rule_id", *EDITABLE})
        if unknown:
            raise CallbotError(f"Unknown field(s) {', '.join(unknown)}; a rule has rule_id, {', '.join(EDITABLE)}.")
        doc = _validated(body)
        with self.store.session(actor) as s:
            if s.scalar(select(ComplianceRule.id).where(ComplianceRule.rule_id == doc.rule_id)) is not None:
                raise CallbotError(f"A rule {doc.rule_id} exists already: change it instead, or choose another id.")
            rule = ComplianceRule(rule_id=doc.rule_id, **doc.model_dump(exclude={"rule_id"}))
            s.add(rule)
            s.flush()
            return _as_dict(rule) | {"affected": _affected(s, rule)}

    def update(self, rule_id: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
        unknown = sorted(set(body) - set(EDITABLE))
        if unknown:
            raise CallbotError(f"Cannot change {', '.join(unknown)}; a rule's editable fields are {', '.join(EDITABLE)} "
                               "(the id stays: switch the rule off and add another to rename it).")
        with self.store.session(actor) as s:
            rule = s.scalar(select(ComplianceRule).where(ComplianceRule.rule_id == rule_id))
            if rule is None:
                raise NotFound(f"No compliance rule {rule_id}; GET /kb/compliance-rules lists them.")
            doc = _validated(_as_dict(rule) | body)
            for field in EDITABLE:
                setattr(rule, field, getattr(doc, field))
            s.flush()
            return _as_dict(rule) | {"affected": _affected(s, rule)}


def _validated(body: dict[str, Any]) -> ComplianceRuleDoc:
    fields = {k: v for k, v in body.items() if k in ("rule_id", *EDITABLE)}
    try:
        doc = ComplianceRuleDoc.model_validate(fields)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg']}" for e in exc.errors())
        raise CallbotError(f"The rule is not valid: {where}.") from exc
    problems = rule_problems(doc)
    if problems:
        raise CallbotError(f"Rule {doc.rule_id}: " + "; ".join(problems) + ".")
    return doc


def _as_dict(r: ComplianceRule) -> dict[str, Any]:
    return {"rule_id": r.rule_id, "pattern": r.pattern, "match_type": MatchType(r.match_type).value,
            "severity": r.severity.value if hasattr(r.severity, "value") else r.severity, "legal_basis": r.legal_basis,
            "description": r.description, "suggestion": r.suggestion, "enabled": r.enabled,
            "updated_at": r.updated_at.isoformat() if getattr(r, "updated_at", None) else None}


def _affected(s: Session, rule: ComplianceRule) -> dict[str, Any] | None:
    """Published answers and prompts the rule matches now; None for a semantic rule (the classifier decides those
    per sentence; `callbot compliance review` sweeps the knowledge base with it)."""
    if rule.match_type == MatchType.semantic or not rule.enabled:
        return None
    pattern = rule.compiled()
    found: list[dict[str, str]] = []
    for code, name, answer in s.execute(select(Scenario.code, Intent.name, Intent.answer).join(Intent.scenario).where(Scenario.live())):
        if answer and (m := pattern.search(answer)):
            found.append({"where": f"{code}/{name} answer", "match": m.group(0), "text": answer})
    for code, step, prompt, reprompt in s.execute(
            select(Scenario.code, ScriptStep.code, ScriptStep.prompt, ScriptStep.reprompt).join(ScriptStep.scenario)
            .where(Scenario.live())):
        for field, text in (("prompt", prompt), ("reprompt", reprompt)):
            if text and (m := pattern.search(text)):
                found.append({"where": f"{code}/{step} {field}", "match": m.group(0), "text": text})
    return {"count": len(found), "shown": found[:AFFECTED_SHOWN]}
