"""Campaigns for staff (Sanic blueprint): the same actions as `callbot campaign …`.

GET  /campaigns                                   every campaign with its contacts' counts by status
POST /campaigns   multipart: file (the customer CSV), scenario, name, window, weekdays, concurrency, retries,
                  retry_after, timezone                       → 201 {"id", "name", "contacts"}; 422 with every bad line
GET  /campaigns/{id}                              status of one
POST /campaigns/{id}/start|pause|resume|cancel    → {"id", "status"}; 409 when the lifecycle forbids it
GET  /campaigns/{id}/report                       counts by outcome, success rate, handling time, callbacks due
GET  /campaigns/{id}/export.csv                   one line per contact, phone masked, formulas neutralised
GET  /campaigns/{id}/chart.png                    outcomes and attempts per hour, as a picture
POST /campaigns/do-not-call {"phone", "reason"}   add a number to the do-not-call list
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, raw, text

from callbot.auth.guard import actor
from callbot.context import get_store
from campaigns.customers import CustomerFileError, normalise_phone
from campaigns.service import LIFECYCLE, Campaigns
from knowledge_base.api import _body
from knowledge_base.errors import CallbotError, NotFound

bp = Blueprint("campaigns", url_prefix="/campaigns")
FIELDS = {"name": str, "window": str, "weekdays": str, "concurrency": int, "retries": int, "retry_after": str, "timezone": str}


def _campaigns() -> Campaigns:
    return Campaigns(get_store())


def _known(campaign_id: int) -> None:
    try:
        _campaigns().status(campaign_id)
    except CallbotError as exc:
        raise NotFound(str(exc)) from None


def _form_options(request: Request) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, kind in FIELDS.items():
        value = (request.form.get(name) or "").strip() if request.form else ""
        if not value:
            continue
        try:
            options[name] = kind(value)
        except ValueError:
            raise CallbotError(f"{name} must be a whole number, not {value!r}.") from None
    return options


@bp.get("/")
async def list_campaigns(_request: Request) -> HTTPResponse:
    return json({"campaigns": _campaigns().status()})


@bp.post("/")
async def create_campaign(request: Request) -> HTTPResponse:
    upload = request.files.get("file") if request.files else None
    scenario = (request.form.get("scenario") or "").strip() if request.form else ""
    if upload is None or not scenario:
        raise CallbotError("Send a multipart form with 'file' (the customers' CSV: name, phone and the scenario's "
                           "variables) and 'scenario' (its code).")
    options = _form_options(request)
    name = Path(upload.name or "customers.csv").name
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(upload.body)
        try:
            created = await asyncio.to_thread(_campaigns().create, scenario, path, **options, actor=actor(request))
        except CustomerFileError as exc:
            return json({"error": "customer file rejected; nothing was written",
                         "problems": [p.replace(str(path), name) for p in exc.problems]}, status=422)
        except CallbotError as exc:
            raise CallbotError(str(exc).replace(str(path), name)) from None
    return json(created, status=201)


@bp.get("/<campaign_id:int>")
async def campaign_status(_request: Request, campaign_id: int) -> HTTPResponse:
    _known(campaign_id)
    return json(_campaigns().status(campaign_id)[0])


@bp.post("/<campaign_id:int>/<action:str>")
async def change_campaign(request: Request, campaign_id: int, action: str) -> HTTPResponse:
    if action not in LIFECYCLE:
        raise NotFound(f"No action {action!r}; use one of {', '.join(LIFECYCLE)}.")
    _known(campaign_id)
    try:
        status = _campaigns().change(campaign_id, action, actor(request))
    except CallbotError as exc:
        return json({"error": str(exc)}, status=409)
    return json({"id": campaign_id, "status": status})


@bp.get("/<campaign_id:int>/report")
async def campaign_report(_request: Request, campaign_id: int) -> HTTPResponse:
    _known(campaign_id)
    return json(_campaigns().report(campaign_id))


@bp.get("/<campaign_id:int>/export.csv")
async def campaign_export(_request: Request, campaign_id: int) -> HTTPResponse:
    _known(campaign_id)
    return text(_campaigns().export_csv(campaign_id), content_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="campaign-{campaign_id}.csv"'})


@bp.get("/<campaign_id:int>/chart.png")
async def campaign_chart(_request: Request, campaign_id: int) -> HTTPResponse:
    from campaigns.chart import render_chart

    _known(campaign_id)
    png = await asyncio.to_thread(render_chart, _campaigns(), campaign_id)
    return raw(png, content_type="image/png")


@bp.post("/do-not-call")
async def add_do_not_call(request: Request) -> HTTPResponse:
    body = _body(request)
    phone = normalise_phone(str(body.get("phone") or ""))
    if phone is None:
        raise CallbotError("phone must be a mainland mobile number (11 digits) or a landline with its area code.")
    _campaigns().do_not_call(phone, str(body.get("reason") or "staff"), actor(request))
    return json({"phone": f"{phone[:3]}****{phone[-4:]}", "do_not_call": True}, status=201)
