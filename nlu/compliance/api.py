"""POST /compliance/check {"texts": ["…", …], "speakers": [optional, one per text]} → {"verdicts": [{"text", "violation",
"hits", "tags"}, …]}: the same guard as the bot's replies, for the admin UI (inline warnings while staff edit answers
and prompts) and other systems. A text whose speaker is ``customer`` is tagged, never the firm's violation."""

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

    body = _body(request)
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise CallbotError('Send {"texts": ["…"]}: a non-empty list of strings.')
    if len(texts) > MAX_TEXTS:
        raise CallbotError(f"At most {MAX_TEXTS} texts per request; send the rest in another.")
    speakers = body.get("speakers")
    if speakers is not None and (not isinstance(speakers, list) or len(speakers) != len(texts)
                                 or not all(s is None or isinstance(s, str) for s in speakers)):
        raise CallbotError('"speakers" must list one speaker (a string such as "customer", or null) per text.')
    guard = get_guard(get_store())
    verdicts = await asyncio.to_thread(guard.verdicts, texts, None, speakers)
    return json({"verdicts": [v.as_dict() for v in verdicts], "classifier": guard.uses_classifier})
