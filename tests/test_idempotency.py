"""Idempotent staff writes (callbot/auth/idempotency.py): the ledger against a real database, then the web app
itself: a resent write runs once, a reused key with another body is refused, a write whose worker died is run by
the resend."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from callbot.auth.idempotency import IdempotencyLedger, check_key, this_worker, worker_gone
from knowledge_base.db import Store
from knowledge_base.models import IdempotentRequest, utcnow
from tests.conftest import demo_webapp_env, running_webapp, staff_token


def dead_worker() -> str:
    """An owner string naming a process of this machine that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = this_worker().split(":", 1)[0]
    return f"{host}:{child.pid}:1"


def test_the_ledger_runs_once_replays_and_refuses_a_different_request(store: Store) -> None:
    ledger = IdempotencyLedger(store, keep_hours=24, pending_s=300)
    me = this_worker()
    first = ledger.claim("alice", "k1", "digest-a", me)
    assert first.verdict == "run"
    assert ledger.claim("alice", "k1", "digest-a", me).verdict == "busy"  # still running in a live process
    assert ledger.claim("alice", "k1", "digest-b", me).verdict == "mismatch"
    assert ledger.claim("bob", "k1", "digest-b", me).verdict == "run"  # keys are per user
    assert first.row_id is not None
    ledger.complete(first.row_id, me, 201, "application/json", b'{"id": 7}')
    again = ledger.claim("alice", "k1", "digest-a", me)
    assert (again.verdict, again.status, again.body, again.content_type) == ("replay", 201, b'{"id": 7}', "application/json")


def test_a_server_error_is_not_an_answer_and_old_keys_are_forgotten(store: Store) -> None:
    ledger = IdempotencyLedger(store, keep_hours=1, pending_s=300)
    me = this_worker()
    c = ledger.claim("alice", "k", "d", me)
    assert c.row_id is not None
    ledger.complete(c.row_id, me, 503, "application/json", b'{"error": "x"}')
    c2 = ledger.claim("alice", "k", "d", me)
    assert c2.verdict == "run"  # the 503 was dropped: the resend runs
    assert c2.row_id is not None
    ledger.complete(c2.row_id, me, 200, "application/json", b"{}")
    with store.session() as s:
        s.execute(update(IdempotentRequest).values(created_at=utcnow() - timedelta(hours=2)))
    assert ledger.claim("alice", "k", "other body", me).verdict == "run"  # expired: the key is free again


def test_a_request_whose_worker_died_is_taken_over_once(store: Store) -> None:
    ledger = IdempotencyLedger(store, keep_hours=24, pending_s=300)
    gone = dead_worker()
    assert worker_gone(gone) and not worker_gone(this_worker())
    assert not worker_gone("another-host:1:1")  # elsewhere: only the lease can free it
    planted = ledger.claim("alice", "k", "d", gone)
    assert planted.verdict == "run"
    taken = ledger.claim("alice", "k", "d", this_worker())
    assert taken.verdict == "run" and taken.row_id == planted.row_id
    assert ledger.claim("alice", "k", "d", "another-host:2:2").verdict == "busy"  # the new owner lives

    remote = ledger.claim("alice", "k2", "d", "another-host:3:3")
    assert remote.verdict == "run"
    assert ledger.claim("alice", "k2", "d", this_worker()).verdict == "busy"
    with store.session() as s:
        s.execute(update(IdempotentRequest).where(IdempotentRequest.key == "k2")
                  .values(created_at=utcnow() - timedelta(seconds=301)))
    assert ledger.claim("alice", "k2", "d", this_worker()).verdict == "run"  # its lease ran out


@pytest.mark.parametrize("key", ["", "x" * 129, "密钥", "a b"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="Idempotency-Key must be"):
        check_key(key)


@pytest.fixture(scope="module")
def web(e5_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    env = demo_webapp_env(tmp_path_factory, e5_model_dir, "idem")
    token = staff_token(env)
    with running_webapp(env) as url:
        yield {"url": url, "env": env, "headers": {"Authorization": "Bearer " + token}}


def _questions(web: dict[str, Any], intent_id: int) -> list[str]:
    r = httpx.get(f"{web['url']}/kb/intents/{intent_id}", headers=web["headers"], timeout=30)
    assert r.status_code == 200, r.text
    return [q["text"] for q in r.json()["extension_questions"]]


def _an_intent(web: dict[str, Any]) -> int:
    r = httpx.get(f"{web['url']}/kb/scenarios/faq/intents", headers=web["headers"], timeout=30)
    assert r.status_code == 200, r.text
    return int(r.json()[0]["id"])


def test_a_resent_write_is_answered_once(web: dict[str, Any]) -> None:
    intent_id = _an_intent(web)
    key = str(uuid.uuid4())
    text = f"幂等测试问题{key[:8]}"
    url = f"{web['url']}/kb/intents/{intent_id}/questions"
    headers = {**web["headers"], "Idempotency-Key": key}
    first = httpx.post(url, json={"text": text}, headers=headers, timeout=60)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    second = httpx.post(url, json={"text": text}, headers=headers, timeout=60)
    assert second.status_code == 201 and second.headers.get("Idempotent-Replayed") == "true"
    assert second.json() == first.json()
    assert _questions(web, intent_id).count(text) == 1

    other = httpx.post(url, json={"text": text + "二"}, headers=headers, timeout=60)
    assert other.status_code == 422 and "different request" in other.json()["error"]
    bad = httpx.post(url, json={"text": text}, headers={**web["headers"], "Idempotency-Key": "has space"}, timeout=60)
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]
    # Without a key nothing changes: the same write twice is two writes (here refused as a duplicate by the KB).
    plain = httpx.post(url, json={"text": text}, headers=web["headers"], timeout=60)
    assert plain.status_code != 201 and "Idempotent-Replayed" not in plain.headers
    # A refusal is an answer too (the handler raised): stored and replayed, not left pending.
    refused_headers = {**web["headers"], "Idempotency-Key": str(uuid.uuid4())}
    refused = httpx.post(url, json={"text": text}, headers=refused_headers, timeout=60)
    assert refused.status_code == plain.status_code
    replayed = httpx.post(url, json={"text": text}, headers=refused_headers, timeout=60)
    assert (replayed.status_code, replayed.headers.get("Idempotent-Replayed")) == (plain.status_code, "true")
    assert replayed.json() == refused.json()


def test_a_write_whose_worker_died_runs_on_resend(web: dict[str, Any]) -> None:
    """The browser got a 502 because the worker died before writing: its resend must run, not wait 5 minutes."""
    from callbot.settings import Settings

    intent_id = _an_intent(web)
    key = str(uuid.uuid4())
    text = f"接管测试问题{key[:8]}"
    url = f"{web['url']}/kb/intents/{intent_id}/questions"
    headers = {**web["headers"], "Idempotency-Key": key}
    db = Store(Settings(home=Path(web["env"]["CALLBOT_HOME"])).db_url)
    try:
        # Plant the dead worker's claim exactly as the web app would have: same principal, key and request digest.
        probe = httpx.post(url, json={"text": text}, headers=headers, timeout=60)
        assert probe.status_code == 201
        with db.session() as s:
            s.execute(update(IdempotentRequest).where(IdempotentRequest.key == key)
                      .values(owner=dead_worker(), response_status=None, response_body=None))
        # Its write never happened: remove the question the probe made.
        q = next(q for q in httpx.get(f"{web['url']}/kb/intents/{intent_id}", headers=web["headers"], timeout=30).json()["extension_questions"]
                 if q["text"] == text)
        assert httpx.delete(f"{web['url']}/kb/questions/{q['id']}", headers=web["headers"], timeout=30).status_code in (200, 204)
        resend = httpx.post(url, json={"text": text}, headers=headers, timeout=60)
        assert resend.status_code == 201 and "Idempotent-Replayed" not in resend.headers
        assert _questions(web, intent_id).count(text) == 1
        with db.session() as s:
            s.execute(update(IdempotentRequest).where(IdempotentRequest.key == key)
                      .values(owner="another-host:1:1", response_status=None, response_body=None))
        busy = httpx.post(url, json={"text": text}, headers=headers, timeout=60)
        assert busy.status_code == 409 and busy.headers.get("Retry-After") == "1"
    finally:
        db.dispose()
