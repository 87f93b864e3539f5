"""Browser pages: the chat widget (proxied to Rasa's REST channel) and the admin curation page."""

from __future__ import annotations

from pathlib import Path

import httpx
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, file, json, redirect

from callbot.settings import get_settings

STATIC = Path(__file__).resolve().parent / "static"
bp = Blueprint("pages")


@bp.get("/")
async def index(_request: Request) -> HTTPResponse:
    return redirect("/chat")


@bp.get("/chat")
async def chat_page(_request: Request) -> HTTPResponse:
    return await file(STATIC / "chat.html", mime_type="text/html; charset=utf-8")


@bp.get("/admin")
async def admin_page(_request: Request) -> HTTPResponse:
    return await file(STATIC / "admin.html", mime_type="text/html; charset=utf-8")


@bp.post("/chat/send")
async def chat_send(request: Request) -> HTTPResponse:
    body = request.json if isinstance(request.json, dict) else {}
    sender = str(body.get("sender") or "")[:128]
    message = str(body.get("message") or "")
    if not sender:
        return json({"error": "sender is required"}, status=400)
    if len(message) > 5000:
        message = message[:5000]
    url = get_settings().url("rasa") + "/webhooks/rest/webhook"
    try:
        async with httpx.AsyncClient(timeout=15) as client:
            resp = await client.post(url, json={"sender": sender, "message": message, "metadata": {"channel": "chat"}})
            resp.raise_for_status()
            return json({"messages": resp.json()})
    except (httpx.HTTPError, ValueError):
        # The dialogue manager is down: say so to the customer, keep the page usable.
        return json({"messages": [{"text": "系统暂时繁忙，请稍后再试，或拨打客服热线转人工。"}], "error": "dialogue manager unavailable"}, status=503)
