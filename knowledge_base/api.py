"""Knowledge-base REST API (Sanic blueprint): read intents, curate extension questions, import, export."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, text

from callbot.context import get_kb
from knowledge_base.errors import CallbotError, ImportRejected, NotFound
from knowledge_base.models import QuestionSource, ReviewStatus

bp = Blueprint("kb", url_prefix="/kb")


def _body(request: Request) -> dict[str, Any]:
    try:
        data = request.json
    except Exception:  # sanic raises BadRequest subclasses for malformed JSON
        raise CallbotError("Request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise CallbotError("Request body must be a JSON object.")
    return data


def _actor(request: Request) -> str:
    from callbot.auth.guard import actor

    return actor(request)


@bp.get("/version")
async def version(_request: Request) -> HTTPResponse:
    return json({"version": get_kb().store.kb_version()})


@bp.get("/stats")
async def stats(_request: Request) -> HTTPResponse:
    return json(vars(get_kb().counts()))


@bp.get("/scenarios")
async def scenarios(_request: Request) -> HTTPResponse:
    return json(get_kb().scenarios())


@bp.get("/scenarios/<code:str>/intents")
async def scenario_intents(_request: Request, code: str) -> HTTPResponse:
    return json(get_kb().intents(code))


@bp.get("/scenarios/<code:str>/steps")
async def scenario_steps(_request: Request, code: str) -> HTTPResponse:
    """The scenario's call script: each step's prompt, reprompt, expected intents and transitions."""
    return json(get_kb().steps(code))


@bp.patch("/steps/<step_id:int>")
async def edit_step(request: Request, step_id: int) -> HTTPResponse:
    """``{"prompt": "…", "reprompt": "…"}``; refused (422, with the rule) when the compliance guard blocks the wording."""
    body = _body(request)
    return json(get_kb().update_step(step_id, _actor(request), body.get("prompt"), body.get("reprompt")))


@bp.patch("/intents/<intent_id:int>")
async def edit_intent(request: Request, intent_id: int) -> HTTPResponse:
    """``{"answer": "…", "standard_question": "…"}``; an answer the compliance guard blocks is not published (422)."""
    body = _body(request)
    return json(get_kb().update_intent(intent_id, _actor(request), body.get("answer"), body.get("standard_question")))


@bp.get("/intents/<intent_id:int>")
async def intent(_request: Request, intent_id: int) -> HTTPResponse:
    return json(get_kb().intent(intent_id))


@bp.post("/intents/<intent_id:int>/questions")
async def add_question(request: Request, intent_id: int) -> HTTPResponse:
    body = _body(request)
    try:
        source = QuestionSource(body.get("source", "manual"))
        status = ReviewStatus(body.get("status", "approved"))
    except ValueError as exc:
        raise CallbotError(str(exc)) from None
    q = get_kb().add_question(intent_id, str(body.get("text", "")), _actor(request), source, status)
    return json(q, status=201)


@bp.post("/intents/<intent_id:int>/expand")
async def expand_intent(request: Request, intent_id: int) -> HTTPResponse:
    """Generate paraphrases of the intent's standard question and store them as pending for review;
    the response lists every candidate with its score and source (the generator that proposed it)."""
    import asyncio

    from nlu.api import GENERATION
    from nlu.service import expand

    body = _body(request) if request.body else {}
    try:
        n = int(body.get("n", 10))
    except (TypeError, ValueError):
        raise CallbotError("n must be an integer.") from None
    method = str(body.get("method", "mixed"))
    kb = get_kb()
    intent = kb.intent(intent_id)
    # Pending and rejected questions are not in the matcher, yet staff have seen them: not proposed again.
    seen = tuple(q["text"] for q in intent["extension_questions"])
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(
        GENERATION, lambda: expand(intent["standard_question"], n, method, intent["scenario"], intent["name"], seen))
    stored, candidates = [], []
    for c in result.candidates:
        try:
            q = kb.add_question(intent_id, c.text, author="generator", source=QuestionSource.generated, status=ReviewStatus.pending)
        except CallbotError:  # added by someone else since the expansion read the intent
            q = None
        if q is not None:
            stored.append(q | {"similarity": c.similarity, "score": c.score, "generator": c.source})
        candidates.append({"text": c.text, "source": c.source, "score": c.score, "similarity": c.similarity,
                           "question_id": q["id"] if q else None})
    return json({"intent_id": intent_id, "method": method, "generated": result.total, "generated_by_source": result.generated,
                 "notes": result.notes, "candidates": candidates, "stored": stored}, status=201)


@bp.post("/mine")
async def mine_questions(request: Request) -> HTTPResponse:
    """Propose extension questions from recorded caller turns; ``"store": true`` queues them as pending."""
    import asyncio
    from datetime import datetime

    from nlu.api import GENERATION
    from nlu.service import mine_conversations

    body = _body(request) if request.body else {}
    try:
        since = datetime.fromisoformat(body["since"]) if body.get("since") else None
        limit, min_conversations = int(body.get("limit", 50)), int(body.get("min_conversations", 1))
    except (TypeError, ValueError):
        raise CallbotError("since must be an ISO date (2026-11-01); limit and min_conversations integers.") from None
    scenario = body.get("scenario") or None
    store, actor = bool(body.get("store", False)), _actor(request)
    loop = asyncio.get_running_loop()
    report = await loop.run_in_executor(
        GENERATION, lambda: mine_conversations(since, scenario, limit, min_conversations, store, actor))
    return json(report, status=201 if store else 200)


@bp.patch("/questions/<question_id:int>")
async def edit_question(request: Request, question_id: int) -> HTTPResponse:
    body = _body(request)
    status = body.get("status")
    try:
        status_enum = ReviewStatus(status) if status is not None else None
    except ValueError:
        raise CallbotError(f"status must be one of pending, approved, rejected (got {status!r}).") from None
    return json(get_kb().update_question(question_id, _actor(request), body.get("text"), status_enum))


@bp.delete("/questions/<question_id:int>")
async def delete_question(request: Request, question_id: int) -> HTTPResponse:
    get_kb().delete_question(question_id, _actor(request))
    return json({"deleted": question_id})


@bp.delete("/scenarios/<code:str>")
async def delete_scenario(request: Request, code: str) -> HTTPResponse:
    """Delete an outbound scenario: kept as a record, no longer matched or called; its campaigns stop (status note)."""
    return json(get_kb().delete_scenario(code, _actor(request)))


@bp.get("/questions")
async def search_questions(request: Request) -> HTTPResponse:
    """Extension questions across intents: ``?q=words&scenario=&status=pending|approved|rejected&source=&limit=&offset=``."""
    args = request.args
    try:
        status = ReviewStatus(args.get("status")) if args.get("status") else None
        source = QuestionSource(args.get("source")) if args.get("source") else None
        limit, offset = max(1, min(1000, int(args.get("limit", 200)))), max(0, int(args.get("offset", 0)))
    except ValueError as exc:
        raise CallbotError(f"Bad filter: {exc}") from None
    return json(get_kb().search_questions(args.get("q", ""), args.get("scenario") or None, status, source, limit, offset))


@bp.post("/questions/bulk")
async def bulk_questions(request: Request) -> HTTPResponse:
    """``{"ids": [1, 2], "action": "approve|reject|delete"}`` in one change (reviewers approve/reject; delete needs kb_edit)."""
    from callbot.auth.policy import Permission, allows

    body = _body(request)
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise CallbotError("ids must be a list of question ids.")
    action = str(body.get("action", ""))
    if action == "delete" and not allows(request.ctx.principal.role, Permission.kb_edit):
        from callbot.auth.errors import Forbidden

        raise Forbidden("Deleting questions needs the editor or admin role.")
    return json(get_kb().bulk_questions(ids, action, _actor(request)))


@bp.get("/compliance-rules")
async def compliance_rules(_request: Request) -> HTTPResponse:
    """The rule book: every rule, on or off, with its legal basis."""
    return json(_rule_book().rules())


@bp.post("/compliance-rules")
async def create_compliance_rule(request: Request) -> HTTPResponse:
    """``{"rule_id", "pattern", "match_type", "severity", "legal_basis", "description", "suggestion"}`` → the rule and
    ``affected``: the published answers and prompts it matches now."""
    return json(_rule_book().create(_body(request), _actor(request)), status=201)


@bp.patch("/compliance-rules/<rule_id:str>")
async def edit_compliance_rule(request: Request, rule_id: str) -> HTTPResponse:
    """Change any field but the id (``{"enabled": false}`` switches a rule off; rules are not deleted)."""
    return json(_rule_book().update(rule_id, _body(request), _actor(request)))


def _rule_book():  # type: ignore[no-untyped-def]
    from callbot.context import get_store
    from knowledge_base.compliance_rules import ComplianceRuleBook

    return ComplianceRuleBook(get_store())


@bp.get("/export")
async def export(request: Request) -> HTTPResponse:
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "yaml", "csv"):
        raise CallbotError("format must be json, yaml or csv.")
    body = get_kb().export(fmt, request.args.get("scenario"))
    ctype = {"json": "application/json", "yaml": "application/yaml", "csv": "text/csv"}[fmt]
    return text(body, content_type=f"{ctype}; charset=utf-8")


@bp.post("/import")
async def import_file(request: Request) -> HTTPResponse:
    upload = request.files.get("file") if request.files else None
    if upload is None:
        raise CallbotError("Send the file as multipart form field 'file' (.yaml, .yml, .json or .csv).")
    name = Path(upload.name or "upload.yaml").name
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(upload.body)
        try:
            report = get_kb().import_files([path], actor=_actor(request))
        except ImportRejected as exc:
            problems = [p.replace(str(path), name) for p in exc.problems]
            return json({"error": "import rejected; nothing was written", "problems": problems}, status=422)
    return json({"created": dict(report.created), "updated": dict(report.updated), "version": report.version})


def error_status(exc: CallbotError) -> int:
    return getattr(exc, "http_status", None) or (404 if isinstance(exc, NotFound) else 400)
