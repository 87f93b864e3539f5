"""POST /compliance/check {"texts": ["…", …]} → {"verdicts": [{"text", "violation", "hits", "tags"}, …]}: the same guard
as the bot's replies, for the admin UI (inline warnings while staff edit answers and prompts) and other systems."""

from __future__ import annotations

import asyncio

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from callbot.context import get_store
from knowledge_base.api import _body
from knowledge_base.errors import CallbotError

bp = Blueprint("compliance", url_prefix="/compliance")
MAX_TEXTS = 200
MAX_CHARS = 20_000


@bp.post("/check")
async def check(request: Request) -> HTTPResponse:
    from nlu.compliance.service import get_guard

    texts = _body(request).get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise CallbotError('Send {"texts": ["…"]}: a non-empty list of strings.')
    if len(texts) > MAX_TEXTS:
        raise CallbotError(f"At most {MAX_TEXTS} texts per request; send the rest in another.")
    guard = get_guard(get_store())
    verdicts = await asyncio.to_thread(guard.verdicts, texts)
    return json({"verdicts": [v.as_dict() for v in verdicts], "classifier": guard.uses_classifier})
