"""Sign-in and staff administration: POST /auth/login, /auth/logout, GET /auth/me, /auth/users, /auth/audit."""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json
from sqlalchemy import select

from callbot.auth.errors import TooManyAttempts
from callbot.auth.guard import COOKIE, actor, bearer, get_accounts
from callbot.context import get_store
from callbot.settings import get_settings
from knowledge_base.api import _body
from knowledge_base.errors import CallbotError
from knowledge_base.models import AuditEntry, Role

bp = Blueprint("auth", url_prefix="/auth")


def _role(value: Any) -> Role:
    try:
        return Role(str(value))
    except ValueError:
        raise CallbotError(f"Unknown role {value!r}: one of {', '.join(r.value for r in Role)}.") from None


@bp.post("/login")
async def login(request: Request) -> HTTPResponse:
    """Sign in with ``{"username", "password"}``: sets the session cookie and returns the CSRF token."""
    body = _body(request)
    client = request.remote_addr or request.ip or "?"
    try:
        issued = get_accounts().sign_in(str(body.get("username", "")), str(body.get("password", "")), client)
    except TooManyAttempts as exc:
        return json({"error": str(exc)}, status=429, headers={"Retry-After": str(exc.retry_after_s)})
    response = json({"user": issued.principal.as_json(), "csrf_token": issued.csrf_token})
    response.add_cookie(COOKIE, issued.token, httponly=True, samesite="Strict", path="/",
                        secure=get_settings().auth.cookie_secure, max_age=get_settings().auth.session_max_hours * 3600)
    return response


@bp.post("/logout")
async def logout(request: Request) -> HTTPResponse:
    """End this browser session (or revoke the API token sent as Bearer)."""
    token = bearer(request) or request.cookies.get(COOKIE, "")
    if token:
        get_accounts().sign_out(token)
    response = json({"signed_out": True})
    response.delete_cookie(COOKIE, path="/")
    return response


@bp.get("/me")
async def me(request: Request) -> HTTPResponse:
    """Who is signed in, the role's permissions, and the CSRF token the console sends with every change."""
    from callbot.auth.policy import ROLE_PERMISSIONS

    p = request.ctx.principal
    perms = sorted(ROLE_PERMISSIONS[p.role]) if p.role else []
    return json({"user": p.as_json(), "permissions": perms, "csrf_token": p.csrf_token})


@bp.get("/users")
async def list_users(_request: Request) -> HTTPResponse:
    """Staff accounts (admin)."""
    return json({"users": get_accounts().users()})


@bp.post("/users")
async def create_user(request: Request) -> HTTPResponse:
    """Create a staff account: ``{"username", "password", "role", "display_name"}`` (admin)."""
    body = _body(request)
    user = get_accounts().create_user(str(body.get("username", "")), str(body.get("password", "")), _role(body.get("role", "viewer")),
                                      actor(request), str(body.get("display_name", "")))
    return json(user, status=201)


@bp.patch("/users/<username:str>")
async def update_user(request: Request, username: str) -> HTTPResponse:
    """Change a role, disable/enable, or set a new password; ends the user's sessions (admin)."""
    body = _body(request)
    user = get_accounts().update_user(username, actor(request), _role(body["role"]) if "role" in body else None,
                                      bool(body["active"]) if "active" in body else None,
                                      str(body["password"]) if "password" in body else None)
    return json(user)


@bp.get("/audit")
async def audit_log(request: Request) -> HTTPResponse:
    """The audit log, newest first: who changed what, when (admin). ``?limit=`` (≤ 500), ``?actor=``."""
    try:
        limit = max(1, min(500, int(request.args.get("limit", 100))))
    except ValueError:
        raise CallbotError("limit must be an integer.") from None
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if request.args.get("actor"):
        query = query.where(AuditEntry.actor == request.args.get("actor"))
    with get_store().session() as s:
        rows = s.scalars(query).all()
        return json({"entries": [{"at": r.at.isoformat(), "actor": r.actor, "action": r.action, "entity": r.entity,
                                  "entity_id": r.entity_id, "changes": r.changes, "kb_version": r.kb_version} for r in rows]})
