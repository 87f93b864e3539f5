"""`callbot kb export`: the knowledge base as a document in the import format (docs/kb-schema.md)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from knowledge_base.importer import CSV_COLUMNS
from knowledge_base.models import ComplaintLabel, ComplianceRule, Intent, ReviewStatus, Scenario
from knowledge_base.schema import SCHEMA_VERSION

FORMATS = ("json", "yaml", "csv")


def export_document(session: Session, scenario: str | None = None, status: ReviewStatus | None = None) -> dict[str, Any]:
    query = select(Scenario).where(Scenario.live()).order_by(Scenario.id).options(
        selectinload(Scenario.steps), selectinload(Scenario.intents).selectinload(Intent.extension_questions)
    )
    if scenario:
        query = query.where(Scenario.code == scenario)
    scenarios = []
    for sc in session.scalars(query):
        scenarios.append({
            "code": sc.code, "name": sc.name, "kind": sc.kind.value, "description": sc.description,
            "language": sc.language, "include_faq": sc.include_faq, "variables": list(sc.variables),
            "steps": [
                {"code": st.code, "kind": st.kind.value, "prompt": st.prompt, "reprompt": st.reprompt or None,
                 "expected_intents": list(st.expected_intents), "transitions": dict(st.transitions), "terminal": st.terminal,
                 **({"outcome": st.outcome} if st.outcome else {})}
                for st in sc.steps
            ],
            "intents": [
                {"name": it.name, "kind": it.kind.value, "category": it.category, "standard_question": it.standard_question,
                 "answer": it.answer,
                 "extension_questions": [
                     {"text": q.text, "source": q.source.value, "status": q.status.value, "author": q.author}
                     for q in it.extension_questions if status is None or q.status == status
                 ]}
                for it in sc.intents
            ],
        })
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "scenarios": scenarios}
    if not scenario:
        doc["compliance_rules"] = [
            {"rule_id": r.rule_id, "pattern": r.pattern, "match_type": r.match_type.value, "severity": r.severity.value,
             "legal_basis": r.legal_basis, "description": r.description, "suggestion": r.suggestion, "enabled": r.enabled}
            for r in session.scalars(select(ComplianceRule).order_by(ComplianceRule.rule_id))
        ]
        doc["complaint_labels"] = [
            {"code": lb.code, "name": lb.name, "parent": lb.parent_code, "description": lb.description}
            for lb in session.scalars(select(ComplaintLabel).order_by(ComplaintLabel.id))
        ]
    return doc


def render(doc: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=200)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for sc in doc["scenarios"]:
            for it in sc["intents"]:
                base = {"scenario": sc["code"], "intent": it["name"], "kind": it["kind"],
                        "standard_question": it["standard_question"], "answer": it["answer"] or ""}
                for q in it["extension_questions"]:
                    writer.writerow({**base, **q})
        return buf.getvalue()
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
