"""The web app's gate: every request is matched to its route's requirement (callbot.auth.policy) before it runs.

Anonymous → 401 (pages: a redirect to /login); signed in without the permission → 403; a browser session's
state-changing request without the matching ``X-CSRF-Token`` header → 403. API tokens and the service token
come as ``Authorization: Bearer …`` and need no CSRF token (a browser never attaches them on its own).
"""

from __future__ import annotations

import hmac
from functools import lru_cache
from urllib.parse import quote

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json, redirect

from callbot.auth.accounts import Principal, StaffAccounts
from callbot.auth.errors import NotSignedIn
from callbot.auth.policy import PAGES, PUBLIC, ROUTES, SERVICE, allows
from callbot.auth.service_token import service_token
from callbot.context import get_store
from callbot.settings import get_settings

COOKIE = "callbot_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@lru_cache(maxsize=1)
def get_accounts() -> StaffAccounts:
    return StaffAccounts(get_store(), get_settings().auth)


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def principal_of(request: Request) -> Principal | None:
    """Who the request comes from, or None when it carries no valid credentials."""
    token = bearer(request)
    if token:
        if hmac.compare_digest(token, service_token()):
            return Principal("service", None, "service")
    else:
        token = request.cookies.get(COOKIE, "")
    if not token:
        return None
    try:
        return get_accounts().resolve(token)
    except NotSignedIn:
        return None


def actor(request: Request) -> str:
    """The name the audit log records for this request's changes."""
    principal = getattr(request.ctx, "principal", None)
    return principal.username if principal else "anonymous"


def _refuse(request: Request, status: int, message: str, page: bool) -> HTTPResponse:
    if page and status == 401:
        return redirect("/login?next=" + quote(request.path))
    if page:
        from callbot.pages import forbidden_page

        return forbidden_page(message)
    return json({"error": message}, status=status)


def install(app: Sanic) -> None:
    @app.on_request(priority=100)
    async def guard(request: Request) -> HTTPResponse | None:
        route = request.route
        if route is None:
            return None  # 404s stay 404s
        requirement = ROUTES.get(route.name)
        page = route.name in PAGES
        if requirement is None:
            return _refuse(request, 403, f"No access policy covers {route.name}: refused to everyone.", page)
        if requirement == PUBLIC:
            request.ctx.principal = principal_of(request) if request.route.name == "callbot.auth.logout" else None
            return None
        principal = principal_of(request)
        if principal is None:
            return _refuse(request, 401, "Sign in required (POST /auth/login, or an API token as 'Authorization: Bearer …').", page)
        if principal.session_kind == "service":
            if requirement != SERVICE:
                return _refuse(request, 403, "The service token only serves POST /nlu/parse.", page)
        elif not allows(principal.role, requirement):
            return _refuse(request, 403, f"Your role ({principal.role}) does not allow this ({requirement}).", page)
        if (request.method not in SAFE_METHODS and principal.session_kind == "browser"
                and not hmac.compare_digest(request.headers.get("x-csrf-token", ""), principal.csrf_token)):
            return _refuse(request, 403, "Missing or wrong CSRF token (send the X-CSRF-Token header from GET /auth/me).", page)
        request.ctx.principal = principal
        return None
