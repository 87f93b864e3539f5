"""Browser pages: the demo page with the embedded widget, the widget's script, sign-in, and the staff console."""

from __future__ import annotations

import html
from pathlib import Path

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, file
from sanic.response import html as html_response

from callbot.settings import PROJECT_ROOT

STATIC = Path(__file__).resolve().parent / "static"
SOCKETIO_JS = PROJECT_ROOT / "web" / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
bp = Blueprint("pages")


async def _page(name: str) -> HTTPResponse:
    # Pages are small and change with the code: no caching, and no framing by other sites.
    return await file(STATIC / name, mime_type="text/html; charset=utf-8",
                      headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"})


def forbidden_page(message: str) -> HTTPResponse:
    return html_response(f"""<!doctype html><html lang="zh-CN"><meta charset="utf-8"><title>无权限 · callbot</title>
<body style="font-family:sans-serif;max-width:560px;margin:60px auto"><h1 id="forbidden">无权限访问 / Forbidden</h1>
<p>{html.escape(message)}</p><p><a href="/admin">返回控制台</a> · <a href="/login">换个账号登录</a></p></body></html>""", status=403)


@bp.get("/")
async def index(_request: Request) -> HTTPResponse:
    """A mock securities-app page with the chat widget embedded by one script tag."""
    return await _page("demo.html")


@bp.get("/chat")
async def chat_page(_request: Request) -> HTTPResponse:
    """The widget opened full-window (for an app's web view)."""
    return await _page("chat.html")


@bp.get("/widget.js")
async def widget_js(_request: Request) -> HTTPResponse:
    """The embeddable chat widget: ``<script src="…/widget.js" data-server="…" data-lang="zh|en">``."""
    return await file(STATIC / "widget.js", mime_type="application/javascript; charset=utf-8", headers={"Cache-Control": "no-cache"})


@bp.get("/vendor/socket.io.min.js")
async def socketio_js(_request: Request) -> HTTPResponse:
    """socket.io-client from the npm registry (web/package-lock.json; installed by `make install`)."""
    if not SOCKETIO_JS.is_file():
        return HTTPResponse("// socket.io-client is not installed (run `make install`): the widget uses the REST channel.\n",
                            status=404, content_type="application/javascript")
    return await file(SOCKETIO_JS, mime_type="application/javascript; charset=utf-8")


ASSETS = {"staff.js": "application/javascript", "staff.css": "text/css"}


@bp.get("/assets/<name:str>")
async def asset(_request: Request, name: str) -> HTTPResponse:
    """The staff pages' shared script and style (no data in them)."""
    if name not in ASSETS:
        return HTTPResponse("not found", status=404)
    return await file(STATIC / "assets" / name, mime_type=ASSETS[name] + "; charset=utf-8", headers={"Cache-Control": "no-cache"})


@bp.get("/login")
async def login_page(_request: Request) -> HTTPResponse:
    return await _page("login.html")


@bp.get("/admin")
async def admin_page(_request: Request) -> HTTPResponse:
    """The staff console (any signed-in role; each panel needs its permission)."""
    return await _page("admin.html")


@bp.get("/desk")
async def desk_page(_request: Request) -> HTTPResponse:
    """The live agent desk (agent, admin)."""
    return await _page("desk.html")


@bp.get("/admin/users")
async def users_page(_request: Request) -> HTTPResponse:
    """Staff accounts and the audit log (admin only)."""
    return await _page("users.html")
