"""Idempotent staff writes: a POST/PATCH/PUT/DELETE sent with an ``Idempotency-Key`` header runs once.

Why: with several web workers behind nginx (`callbot up --profile scale`), a worker that dies while a write is in
flight leaves the browser with a 502 and no way to know whether the write happened; a double click does the same
on one worker. The staff pages send a fresh key per action and resend with the same key on a 502/503/504 or a
network error (callbot/static/assets/staff.js); API clients may do the same.

Per signed-in user and key, the first request is claimed in the database (so every worker sees it) and its
answer stored for ``auth.idempotency_hours``:

- the same key with the same request again → the stored answer, with ``Idempotent-Replayed: true``;
- the same key with a different request → 422 (a client bug: one key per action);
- while the first is still running → 409 with ``Retry-After``; when its worker has died (this machine) or it has
  run longer than ``auth.idempotency_pending_s``, the resend takes it over and runs;
- an answer of 500 or more is not stored: the resend runs again.

The remaining window: a worker killed between committing the write and storing its answer (a few milliseconds)
leaves the key pending, and the resend runs the write again.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from callbot.context import get_store
from callbot.settings import get_settings
from knowledge_base.db import Store
from knowledge_base.models import IdempotentRequest, utcnow

HEADER = "idempotency-key"
REPLAYED = "Idempotent-Replayed"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_STORED_BODY = 8 * 1024 * 1024  # larger answers are not replayed (no staff write answers with that much)


class BadKey(ValueError):
    pass


def check_key(key: str) -> str:
    if not 1 <= len(key) <= 128 or any(not 0x21 <= ord(c) <= 0x7E for c in key):
        raise BadKey("Idempotency-Key must be 1–128 visible ASCII characters (e.g. a UUID), one per action.")
    return key


def request_digest(request: Request) -> str:
    """What makes two sends the same request: method, path, query and body. A multipart body is read by its parts
    (the browser picks a new boundary on every send of the same form)."""
    h = hashlib.sha256(f"{request.method}\n{request.path}\n{request.query_string}\n".encode())
    if (request.content_type or "").startswith("multipart/form-data"):
        for name in sorted(request.form or {}):
            for value in request.form.getlist(name):
                h.update(f"form\0{name}\0{value}\0".encode())
        for name in sorted(request.files or {}):
            for f in request.files.getlist(name):
                h.update(f"file\0{name}\0{f.name}\0".encode())
                h.update(hashlib.sha256(f.body).digest())
    else:
        h.update(request.body or b"")
    return h.hexdigest()


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for the old process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


@lru_cache(maxsize=1)
def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def worker_gone(owner: str) -> bool:
    """True when ``owner`` ran on this machine and that process no longer exists; False when it lives or is elsewhere."""
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    now_started = _start_time(int(pid_text))
    return now_started == "" or (started != "" and now_started != started)


@dataclass(frozen=True)
class Claim:
    verdict: str  # run | replay | mismatch | busy
    row_id: int | None = None
    status: int = 0
    content_type: str = ""
    body: bytes = b""


class IdempotencyLedger:
    """The database side: claim a key, store its answer, forget old keys."""

    def __init__(self, store: Store, keep_hours: int, pending_s: int):
        self.store = store
        self.keep = timedelta(hours=keep_hours)
        self.pending = timedelta(seconds=pending_s)

    def claim(self, principal: str, key: str, digest: str, owner: str) -> Claim:
        now = utcnow()
        with self.store.session() as s:
            s.execute(delete(IdempotentRequest).where(IdempotentRequest.created_at < now - self.keep))
        for _ in range(2):  # a second pass when the row we collided with expired in between
            try:
                with self.store.session() as s:
                    row = IdempotentRequest(principal=principal, key=key, request_sha256=digest, owner=owner, created_at=now)
                    s.add(row)
                    s.flush()
                    return Claim("run", row.id)
            except IntegrityError:
                pass
            with self.store.session() as s:
                row = s.scalars(select(IdempotentRequest).where(IdempotentRequest.principal == principal,
                                                                IdempotentRequest.key == key)).first()
                if row is None:
                    continue
                if row.request_sha256 != digest:
                    return Claim("mismatch", row.id)
                if row.response_status is not None:
                    return Claim("replay", row.id, row.response_status, row.response_type, row.response_body or b"")
                if not (worker_gone(row.owner) or row.created_at < now - self.pending):
                    return Claim("busy", row.id)
                # Take over: only one resend wins (the row still names the old owner for exactly one of them).
                taken = s.execute(update(IdempotentRequest)
                                  .where(IdempotentRequest.id == row.id, IdempotentRequest.owner == row.owner,
                                         IdempotentRequest.response_status.is_(None))
                                  .values(owner=owner, created_at=now)).rowcount
                return Claim("run", row.id) if taken == 1 else Claim("busy", row.id)
        return Claim("busy")

    def complete(self, row_id: int, owner: str, status: int, content_type: str, body: bytes | None) -> None:
        mine = (IdempotentRequest.id == row_id, IdempotentRequest.owner == owner)
        with self.store.session() as s:
            if status >= 500 or body is None or len(body) > MAX_STORED_BODY:
                s.execute(delete(IdempotentRequest).where(*mine))  # not an answer to keep: a resend runs again
            else:
                s.execute(update(IdempotentRequest).where(*mine)
                          .values(response_status=status, response_type=content_type, response_body=body))


@lru_cache(maxsize=1)
def get_ledger() -> IdempotencyLedger:
    auth = get_settings().auth
    return IdempotencyLedger(get_store(), auth.idempotency_hours, auth.idempotency_pending_s)


def install(app: Sanic) -> None:
    """After the gate (callbot.auth.guard, priority 100): only signed-in callers' writes are keyed."""

    @app.on_request(priority=50)
    async def claim_key(request: Request) -> HTTPResponse | None:
        principal = getattr(request.ctx, "principal", None)
        key = request.headers.get(HEADER)
        if key is None or principal is None or request.method not in WRITE_METHODS:
            return None
        try:
            check_key(key)
        except BadKey as exc:
            return json({"error": str(exc)}, status=400)
        claim = get_ledger().claim(principal.username, key, request_digest(request), this_worker())
        if claim.verdict == "run":
            request.ctx.idempotent_row = claim.row_id
            return None
        if claim.verdict == "replay":
            return HTTPResponse(claim.body, status=claim.status, content_type=claim.content_type or None,
                                headers={REPLAYED: "true"})
        if claim.verdict == "mismatch":
            return json({"error": "This Idempotency-Key was already used for a different request: send a new key "
                                  "for each action."}, status=422)
        return json({"error": "The request with this Idempotency-Key is still being processed; resend it shortly."},
                    status=409, headers={"Retry-After": "1"})

    @app.on_response(priority=50)
    async def store_answer(request: Request, response: HTTPResponse) -> None:
        row_id = getattr(request.ctx, "idempotent_row", None)
        if row_id is None:
            return
        request.ctx.idempotent_row = None
        get_ledger().complete(row_id, this_worker(), response.status, response.content_type or "",
                              response.body if isinstance(response.body, bytes) else None)
