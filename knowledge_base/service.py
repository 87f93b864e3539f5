"""Knowledge-base operations shared by the CLI, the web API and the action server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from knowledge_base.db import Store
from knowledge_base.errors import CallbotError, ImportRejected, NotFound
from knowledge_base.exporter import export_document, render
from knowledge_base.importer import ImportReport, apply_batch, existing_intents, published_texts, validate_files
from knowledge_base.models import (
    Campaign,
    ComplaintLabel,
    ComplianceRule,
    ExtensionQuestion,
    Intent,
    QuestionSource,
    ReviewStatus,
    Scenario,
    ScenarioKind,
    ScriptStep,
    utcnow,
)
from knowledge_base.schema import QuestionText

_question_text = TypeAdapter(QuestionText)


@dataclass
class KnowledgeBaseCounts:
    scenarios: int
    intents: int
    faq_intents: int
    extension_questions: int
    approved_questions: int
    compliance_rules: int
    complaint_labels: int
    version: int


# Checks what an import would publish (answers, script prompts) in the import's own transaction: (where, text) pairs
# in, one problem line per blocked text out. callbot/context.py plugs in the compliance guard (nlu/compliance).
PublishCheck = Callable[[Session, list[tuple[str, str]]], list[str]]


class PublishBlocked(CallbotError):
    """The compliance guard refused a text staff tried to publish; nothing was changed."""

    http_status = 422

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Not published; the compliance guard blocked it: " + " ".join(problems))


class KnowledgeBase:
    def __init__(self, store: Store, publish_check: PublishCheck | None = None):
        self.store = store
        self.publish_check = publish_check

    # -- import / export -------------------------------------------------
    def import_files(self, paths: Sequence[Path], actor: str = "import") -> ImportReport:
        with self.store.session(actor) as session:
            batch = validate_files(paths, existing_intents(session))
            report = apply_batch(session, batch, actor)
            if self.publish_check is not None:
                session.flush()  # the rules this import brings apply to its own texts
                problems = self.publish_check(session, published_texts(batch))
                if problems:
                    raise ImportRejected(problems)  # the transaction rolls back: nothing is published
        report.version = self.store.kb_version()
        return report

    def export(self, fmt: str, scenario: str | None = None, status: ReviewStatus | None = None) -> str:
        with self.store.session() as session:
            if scenario and session.scalar(select(Scenario.id).where(Scenario.code == scenario, Scenario.live())) is None:
                raise NotFound(f"Scenario {scenario!r} does not exist; `callbot kb scenarios` lists them.")
            return render(export_document(session, scenario, status), fmt)

    # -- reads -------------------------------------------------------------
    def counts(self) -> KnowledgeBaseCounts:
        """What is served: a deleted scenario's intents and questions are kept as records, not counted."""
        live_intents = select(Intent.id).join(Scenario, Intent.scenario_id == Scenario.id).where(Scenario.live())
        questions = select(func.count(ExtensionQuestion.id)).where(ExtensionQuestion.intent_id.in_(live_intents))
        with self.store.session() as s:
            return KnowledgeBaseCounts(
                scenarios=s.scalar(select(func.count(Scenario.id)).where(Scenario.live())) or 0,
                intents=s.scalar(select(func.count(Intent.id)).where(Intent.id.in_(live_intents))) or 0,
                faq_intents=s.scalar(select(func.count(Intent.id)).where(Intent.kind == "faq", Intent.id.in_(live_intents))) or 0,
                extension_questions=s.scalar(questions) or 0,
                approved_questions=s.scalar(questions.where(ExtensionQuestion.status == ReviewStatus.approved)) or 0,
                compliance_rules=s.scalar(select(func.count(ComplianceRule.id))) or 0,
                complaint_labels=s.scalar(select(func.count(ComplaintLabel.id))) or 0,
                version=self.store.kb_version(),
            )

    def scenarios(self) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows = s.execute(
                select(Scenario, func.count(Intent.id)).join(Intent, isouter=True).where(Scenario.live())
                .group_by(Scenario.id).order_by(Scenario.id)
            ).all()
            return [{"code": sc.code, "name": sc.name, "kind": sc.kind.value, "include_faq": sc.include_faq,
                     "variables": sc.variables, "intents": n} for sc, n in rows]

    def intents(self, scenario: str) -> list[dict[str, Any]]:
        with self.store.session() as s:
            sc = self._scenario(s, scenario)
            return [self._intent_dict(it) for it in sc.intents]

    def intent(self, intent_id: int) -> dict[str, Any]:
        with self.store.session() as s:
            return self._intent_dict(self._intent(s, intent_id), with_questions=True)

    # -- extension-question edits (each one a committed, audited KB change) --
    def add_question(self, intent_id: int, text: str, author: str, source: QuestionSource = QuestionSource.manual,
                     status: ReviewStatus = ReviewStatus.approved) -> dict[str, Any]:
        clean = self._clean(text)
        with self.store.session(author) as s:
            intent = self._intent(s, intent_id)
            if any(q.text == clean for q in intent.extension_questions):
                raise CallbotError(f"Intent {intent.name!r} already has the extension question {clean!r}.")
            q = ExtensionQuestion(intent=intent, text=clean, author=author, source=source, status=status)
            s.add(q)
            s.flush()
            return self._question_dict(q)

    def update_question(self, question_id: int, actor: str, text: str | None = None, status: ReviewStatus | None = None) -> dict[str, Any]:
        with self.store.session(actor) as s:
            q = s.get(ExtensionQuestion, question_id)
            if q is None:
                raise NotFound(f"Extension question {question_id} does not exist.")
            if text is not None:
                q.text = self._clean(text)
            if status is not None and status != q.status:
                q.status = status
                q.reviewed_by, q.reviewed_at = actor, utcnow()
            s.flush()
            return self._question_dict(q)

    def delete_question(self, question_id: int, actor: str) -> None:
        with self.store.session(actor) as s:
            q = s.get(ExtensionQuestion, question_id)
            if q is None:
                raise NotFound(f"Extension question {question_id} does not exist.")
            s.delete(q)

    def delete_scenario(self, code: str, actor: str) -> dict[str, Any]:
        """Delete an outbound scenario (kept as a record, see Scenario.deleted_at) and, in the same transaction, stop
        every campaign that would still call with it: the dialer then claims nothing more, calls in flight end on
        their own (the call's next turn finds no script and says so), and every recorded outcome stays."""
        with self.store.session(actor) as s:
            sc = self._scenario(s, code)
            if sc.kind != ScenarioKind.outbound:
                raise CallbotError(f"Scenario {code!r} is the inbound FAQ domain; delete its intents instead of the scenario.")
            sc.deleted_at, sc.deleted_by = utcnow(), actor
            stopped = []
            for campaign in s.scalars(select(Campaign).where(Campaign.scenario_id == sc.id,
                                                             Campaign.status.in_(("draft", "running", "paused")))):
                campaign.status, campaign.status_note = "stopped", scenario_deleted_note(sc)
                stopped.append(campaign.id)
            return {"scenario": code, "deleted_at": sc.deleted_at.isoformat(), "deleted_by": actor, "stopped_campaigns": stopped}

    # -- scripts and answers (staff edits pass the compliance guard, like an import) --
    def steps(self, scenario: str) -> list[dict[str, Any]]:
        with self.store.session() as s:
            sc = self._scenario(s, scenario)
            return [self._step_dict(st) for st in sorted(sc.steps, key=lambda st: st.position)]

    def update_step(self, step_id: int, actor: str, prompt: str | None = None, reprompt: str | None = None) -> dict[str, Any]:
        """Change what a script step says; placeholders must be the scenario's variables; the guard must pass it."""
        import re

        from knowledge_base.importer import SYSTEM_VARIABLES

        with self.store.session(actor) as s:
            st = s.get(ScriptStep, step_id)
            if st is None:
                raise NotFound(f"Script step {step_id} does not exist.")
            declared = set(st.scenario.variables or []) | SYSTEM_VARIABLES
            changed: list[tuple[str, str]] = []
            for field, value in (("prompt", prompt), ("reprompt", reprompt)):
                if value is None:
                    continue
                value = value.strip()
                if field == "prompt" and not value:
                    raise CallbotError("A step's prompt cannot be empty.")
                if len(value) > 2000:
                    raise CallbotError(f"The {field} is {len(value)} characters long; at most 2000.")
                unknown = sorted(set(re.findall(r"\{(\w+)\}", value)) - declared)
                if unknown:
                    raise CallbotError(f"Unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; the scenario's "
                                       f"variables are {', '.join(sorted(declared))}.")
                setattr(st, field, value)
                changed.append((f"{st.scenario.code}/{st.code}.{field}", value))
            self._check_published(s, changed)
            s.flush()
            return self._step_dict(st)

    def update_intent(self, intent_id: int, actor: str, answer: str | None = None, standard_question: str | None = None) -> dict[str, Any]:
        with self.store.session(actor) as s:
            it = self._intent(s, intent_id)
            if standard_question is not None:
                it.standard_question = self._clean(standard_question)
            if answer is not None:
                if len(answer) > 5000:
                    raise CallbotError(f"The answer is {len(answer)} characters long; at most 5000.")
                it.answer = answer.strip()
                self._check_published(s, [(f"{it.scenario.code}/{it.name}.answer", it.answer)])
            s.flush()
            return self._intent_dict(it)

    def _check_published(self, s: Session, texts: list[tuple[str, str]]) -> None:
        problems = self.publish_check(s, texts) if self.publish_check and texts else []
        if problems:
            raise PublishBlocked(problems)

    @staticmethod
    def _step_dict(st: ScriptStep) -> dict[str, Any]:
        return {"id": st.id, "scenario": st.scenario.code, "code": st.code, "position": st.position, "kind": st.kind.value,
                "prompt": st.prompt, "reprompt": st.reprompt, "expected_intents": st.expected_intents,
                "transitions": st.transitions, "terminal": st.terminal, "outcome": st.outcome}

    def search_questions(self, query: str = "", scenario: str | None = None, status: ReviewStatus | None = None,
                         source: QuestionSource | None = None, limit: int = 200, offset: int = 0) -> dict[str, Any]:
        """Extension questions across intents, filtered by words, scenario, review status and source (the console's list)."""
        q = (select(ExtensionQuestion, Intent.name, Scenario.code).join(Intent, ExtensionQuestion.intent_id == Intent.id)
             .join(Scenario, Intent.scenario_id == Scenario.id).where(Scenario.live()))
        if query.strip():
            q = q.where(ExtensionQuestion.text.contains(query.strip()[:100], autoescape=True))
        if scenario:
            q = q.where(Scenario.code == scenario)
        if status is not None:
            q = q.where(ExtensionQuestion.status == status)
        if source is not None:
            q = q.where(ExtensionQuestion.source == source)
        with self.store.session() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.execute(q.order_by(ExtensionQuestion.id.desc()).limit(limit).offset(offset)).all()
            return {"total": total, "questions": [self._question_dict(row) | {"intent": name, "scenario": code}
                                                  for row, name, code in rows]}

    def bulk_questions(self, ids: Sequence[int], action: str, actor: str) -> dict[str, Any]:
        """Approve, reject or delete many questions in one transaction (one KB version, one audit entry each)."""
        if action not in ("approve", "reject", "delete"):
            raise CallbotError("action must be approve, reject or delete.")
        if not ids or len(ids) > 1000:
            raise CallbotError("ids: between 1 and 1000 question ids.")
        with self.store.session(actor) as s:
            rows = s.scalars(select(ExtensionQuestion).where(ExtensionQuestion.id.in_(list(ids)))).all()
            missing = sorted(set(ids) - {q.id for q in rows})
            if missing:
                raise NotFound(f"No extension question(s) {', '.join(map(str, missing[:20]))}; nothing was changed.")
            for q in rows:
                if action == "delete":
                    s.delete(q)
                else:
                    target = ReviewStatus.approved if action == "approve" else ReviewStatus.rejected
                    if q.status != target:
                        q.status, q.reviewed_by, q.reviewed_at = target, actor, utcnow()
            return {"action": action, "changed": len(rows)}

    # -- helpers -------------------------------------------------------------
    @staticmethod
    def _clean(text: str) -> str:
        try:
            return _question_text.validate_python(text)
        except ValidationError as exc:
            raise CallbotError(f"Invalid extension question: {exc.errors()[0]['msg']} (at most 200 characters, no control characters).") from None

    @staticmethod
    def _scenario(s: Session, code: str) -> Scenario:
        sc = s.scalar(select(Scenario).where(Scenario.code == code))
        if sc is not None and sc.deleted_at is not None:
            raise NotFound(f"Scenario {code!r} was deleted on {sc.deleted_at:%Y-%m-%d %H:%M} UTC by {sc.deleted_by}; "
                           "importing it again restores it.")
        if sc is None:
            known = ", ".join(s.scalars(select(Scenario.code).where(Scenario.live())))
            raise NotFound(f"Scenario {code!r} does not exist. Known scenarios: {known or '(none — run `callbot kb demo`)'}.")
        return sc

    @staticmethod
    def _intent(s: Session, intent_id: int) -> Intent:
        it = s.get(Intent, intent_id)
        if it is None:
            raise NotFound(f"Intent {intent_id} does not exist.")
        return it

    @staticmethod
    def _question_dict(q: ExtensionQuestion) -> dict[str, Any]:
        return {"id": q.id, "intent_id": q.intent_id, "text": q.text, "source": q.source.value, "status": q.status.value,
                "author": q.author, "reviewed_by": q.reviewed_by}

    def _intent_dict(self, it: Intent, with_questions: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"id": it.id, "scenario": it.scenario.code, "name": it.name, "kind": it.kind.value,
                               "category": it.category, "standard_question": it.standard_question, "answer": it.answer,
                               "question_count": len(it.extension_questions),
                               "pending_count": sum(q.status == ReviewStatus.pending for q in it.extension_questions)}
        if with_questions:
            out["extension_questions"] = [self._question_dict(q) for q in it.extension_questions]
        return out


def scenario_deleted_note(scenario: Scenario | None) -> str:
    """A stopped campaign's status note: which scenario went, when and by whom (None: a row removed outright)."""
    if scenario is None or scenario.deleted_at is None:
        return "its scenario was deleted from the knowledge base"
    return (f"its scenario {scenario.code} was deleted from the knowledge base on {scenario.deleted_at:%Y-%m-%d %H:%M} UTC "
            f"by {scenario.deleted_by}; contacts not yet called stay pending, and importing the scenario again does not "
            "restart the campaign (create a new one)")

