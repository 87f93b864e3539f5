"""Staff sign-in and the access policy, against the real web app: every route's anonymous answer, roles, CSRF,
the login rate limit, sessions that end, API and service tokens, the `callbot user` command and the audit log."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbot.auth.policy import PAGES, PUBLIC, ROUTES
from tests.conftest import ROOT, create_staff, demo_webapp_env, http, running_webapp, staff_token

PASSWORD = "a long enough passphrase"


@pytest.fixture(scope="module")
def web(e5_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    env = demo_webapp_env(tmp_path_factory, e5_model_dir, "auth")
    with running_webapp(env) as url:
        yield {"url": url, "env": env}


def callbot(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "callbot"), *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def browser_session(url: str, username: str, password: str = PASSWORD) -> tuple[httpx.Client, str]:
    """A cookie session as the console has one: (client with the session cookie, CSRF token)."""
    client = httpx.Client(base_url=url, timeout=30)
    r = client.post("/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return client, r.json()["csrf_token"]


def concrete(path: str) -> str:
    """A route pattern with each parameter filled in (ints as 1, strings as x)."""
    return "/" + re.sub(r"<(\w+)(?::(\w+))?>", lambda m: "1" if m.group(2) == "int" else "x", path)


def test_every_route_has_a_policy_and_refuses_anonymous_callers(web: dict[str, Any]) -> None:
    from callbot.webapp import create_app

    app = create_app()
    routes = list(app.router.routes)
    names = {r.name for r in routes}
    assert names == set(ROUTES), f"routes without a policy: {names - set(ROUTES)}; stale entries: {set(ROUTES) - names}"
    public_seen = protected_seen = 0
    for route in routes:
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            url = web["url"] + concrete(route.path)
            if route.path.startswith("socket.io"):
                url += "?EIO=4&transport=polling"
            r = httpx.request(method, url, follow_redirects=False, timeout=60,
                              **({"json": {}} if method in ("POST", "PATCH", "PUT") else {}))
            where = f"{method} /{route.path} ({route.name})"
            if ROUTES[route.name] == PUBLIC:
                public_seen += 1
                # Public routes may still refuse bad input (an empty sign-in is a 401 for wrong credentials), never for
                # want of a session.
                assert r.status_code != 403 and "Sign in required" not in r.text, f"{where} is public but answered {r.status_code}"
            elif route.name in PAGES:
                protected_seen += 1
                assert r.status_code == 302 and r.headers["location"].startswith("/login?next="), f"{where}: {r.status_code}"
            else:
                protected_seen += 1
                assert r.status_code == 401, f"{where} answered {r.status_code} to an anonymous caller"
                assert "Sign in required" in r.json()["error"]
    assert public_seen >= 10 and protected_seen >= 50


def test_roles_are_enforced_per_route(web: dict[str, Any]) -> None:
    url, env = web["url"], web["env"]
    tokens = {role: staff_token(env, f"role-{role}", role) for role in ("reviewer", "agent", "viewer", "editor")}

    def status(role: str, method: str, path: str, body: Any = None) -> int:
        return http(method, url + path, body, headers={"Authorization": "Bearer " + tokens[role]})[0]

    assert status("reviewer", "GET", "/auth/users") == 403
    assert status("reviewer", "GET", "/auth/audit") == 403
    assert status("reviewer", "GET", "/conversations") == 200
    assert status("reviewer", "DELETE", "/kb/questions/1") == 403  # deleting is an editor's
    assert status("editor", "DELETE", "/kb/questions/999999") == 404  # allowed, the question does not exist
    assert status("agent", "GET", "/conversations") == 403
    assert status("agent", "GET", "/desk/handovers") == 200
    assert status("reviewer", "GET", "/desk/handovers") == 403
    assert status("viewer", "POST", "/nlu/parse", {"text": "怎么开户"}) == 403
    assert status("viewer", "GET", "/kb/scenarios") == 200
    assert status("editor", "POST", "/campaigns/1/start") == 404  # allowed, no such campaign
    assert status("agent", "POST", "/campaigns/1/start") == 403
    refused = http("GET", url + "/auth/users", headers={"Authorization": "Bearer " + tokens["viewer"]})[1]
    assert "viewer" in refused["error"] and "users" in refused["error"]


def test_browser_sessions_need_the_csrf_token_for_changes(web: dict[str, Any]) -> None:
    url, env = web["url"], web["env"]
    create_staff(env, "csrf-editor", "editor", PASSWORD)
    client, csrf = browser_session(url, "csrf-editor")
    cookie = client.cookies.get("callbot_session")
    assert cookie and len(cookie) >= 40
    intent = client.get("/kb/scenarios/faq/intents").json()[0]
    body = {"text": "CSRF 测试问法之一"}
    refused = client.post(f"/kb/intents/{intent['id']}/questions", json=body)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    wrong = client.post(f"/kb/intents/{intent['id']}/questions", json=body, headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403
    made = client.post(f"/kb/intents/{intent['id']}/questions", json=body, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    assert client.get("/auth/me").json()["csrf_token"] == csrf
    # Signing out ends the session on the server: the same cookie is refused afterwards.
    assert client.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    stale = httpx.get(url + "/kb/scenarios", cookies={"callbot_session": cookie})
    assert stale.status_code == 401


def test_login_is_rate_limited_and_says_when_to_retry(web: dict[str, Any]) -> None:
    url, env = web["url"], web["env"]
    create_staff(env, "rate-limited", "viewer", PASSWORD)
    for _ in range(5):
        r = httpx.post(url + "/auth/login", json={"username": "rate-limited", "password": "wrong password!"})
        assert r.status_code == 401 and "Wrong user name or password" in r.json()["error"]
    blocked = httpx.post(url + "/auth/login", json={"username": "rate-limited", "password": PASSWORD})
    assert blocked.status_code == 429, "the right password does not get through while the limit holds"
    assert int(blocked.headers["retry-after"]) > 0 and "Too many failed sign-ins" in blocked.json()["error"]
    assert httpx.post(url + "/auth/login", json={"username": "nobody-here", "password": PASSWORD}).status_code == 401


def test_the_service_token_serves_only_the_nlu_route(web: dict[str, Any]) -> None:
    from callbot.auth.service_token import service_token
    from callbot.settings import Settings

    url, env = web["url"], web["env"]
    token = service_token(Settings(cache_dir=Path(env["CALLBOT_CACHE_DIR"])))
    auth = {"Authorization": "Bearer " + token}
    status, parsed = http("POST", url + "/nlu/parse", {"text": "我想开个户怎么弄", "scenario": "faq"}, headers=auth)
    assert status == 200 and parsed["intent"]["name"] == "faq"
    assert http("GET", url + "/kb/export", headers=auth)[0] == 403
    assert http("POST", url + "/nlu/parse", {"text": "x"}, headers={"Authorization": "Bearer not-the-token"})[0] == 401


def test_user_command_creates_accounts_safely_and_the_audit_log_names_who(web: dict[str, Any]) -> None:
    url, env = web["url"], web["env"]
    no_tty = callbot(env, "user", "create", "-u", "first.admin", "--role", "admin", stdin="")
    assert no_tty.returncode != 0 and "--password-stdin" in no_tty.stderr
    short = callbot(env, "user", "create", "-u", "first.admin", "--role", "admin", "--password-stdin", stdin="short\n")
    assert short.returncode != 0 and "too short" in short.stderr
    bad_role = callbot(env, "user", "create", "-u", "first.admin", "--role", "root", "--password-stdin", stdin=PASSWORD + "\n")
    assert bad_role.returncode != 0 and "Unknown role" in bad_role.stderr
    made = callbot(env, "user", "create", "-u", "first.admin", "--role", "admin", "--name", "王丽", "--password-stdin",
                   stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    again = callbot(env, "user", "create", "-u", "first.admin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert again.returncode != 0 and "exists already" in again.stderr
    listed = callbot(env, "user", "list")
    assert re.search(r"first\.admin\s+admin\s+active\s+王丽", listed.stdout), listed.stdout

    import sqlite3

    db = sqlite3.connect(Path(env["CALLBOT_HOME"]) / "callbot.db")
    stored = db.execute("SELECT password_hash FROM staff_user WHERE username='first.admin'").fetchone()[0]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    audit = db.execute("SELECT changes FROM audit_log WHERE entity='StaffUser' AND changes LIKE '%first.admin%'").fetchone()[0]
    assert '"password_hash": "***"' in audit and "argon2" not in audit

    # A change made through the API is recorded under the signed-in user, not a name the client sends.
    client, csrf = browser_session(url, "first.admin")
    intent = client.get("/kb/scenarios/faq/intents").json()[1]
    made_q = client.post(f"/kb/intents/{intent['id']}/questions", json={"text": "审计测试问法"},
                         headers={"X-CSRF-Token": csrf, "X-Callbot-User": "somebody-else"})
    assert made_q.status_code == 201
    entries = client.get("/auth/audit?limit=20").json()["entries"]
    mine = [e for e in entries if e["entity"] == "ExtensionQuestion" and e["entity_id"] == made_q.json()["id"]]
    assert mine and mine[0]["actor"] == "first.admin" and mine[0]["action"] == "create"

    # Disabling the account ends its sessions and tokens at once.
    token = staff_token(env, "first.admin")
    assert http("GET", url + "/kb/scenarios", headers={"Authorization": "Bearer " + token})[0] == 200
    create_staff(env, "second.admin", "admin", PASSWORD)
    assert callbot(env, "user", "disable", "first.admin").returncode == 0
    assert http("GET", url + "/kb/scenarios", headers={"Authorization": "Bearer " + token})[0] == 401
    assert client.get("/kb/scenarios").status_code == 401
    assert httpx.post(url + "/auth/login", json={"username": "first.admin", "password": PASSWORD}).status_code == 401


def test_the_last_admin_cannot_be_demoted_or_disabled(store) -> None:  # type: ignore[no-untyped-def]
    from callbot.auth.accounts import StaffAccounts
    from callbot.settings import AuthSettings
    from knowledge_base.errors import CallbotError
    from knowledge_base.models import Role

    accounts = StaffAccounts(store, AuthSettings())
    accounts.create_user("only.admin", PASSWORD, Role.admin, "test")
    with pytest.raises(CallbotError, match="last active admin"):
        accounts.update_user("only.admin", "test", active=False)
    with pytest.raises(CallbotError, match="last active admin"):
        accounts.update_user("only.admin", "test", role=Role.viewer)


def test_browser_sessions_end_when_idle_or_too_old(store) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    from sqlalchemy import select, update

    from callbot.auth.accounts import StaffAccounts
    from callbot.auth.errors import NotSignedIn
    from callbot.settings import AuthSettings
    from knowledge_base.models import Role, StaffSession, utcnow

    accounts = StaffAccounts(store, AuthSettings(session_idle_minutes=30, session_max_hours=8))
    accounts.create_user("idle.user", PASSWORD, Role.viewer, "test")
    first = accounts.sign_in("idle.user", PASSWORD, "127.0.0.1")
    assert accounts.resolve(first.token).username == "idle.user"
    now = utcnow().replace(tzinfo=None)
    with store.session() as s:  # last used 31 minutes ago
        s.execute(update(StaffSession).where(StaffSession.id == first.principal.session_id)
                  .values(last_seen_at=now - timedelta(minutes=31)))
    with pytest.raises(NotSignedIn, match="inactivity"):
        accounts.resolve(first.token)
    second = accounts.sign_in("idle.user", PASSWORD, "127.0.0.1")
    with store.session() as s:  # in use, but signed in more than session_max_hours ago
        s.execute(update(StaffSession).where(StaffSession.id == second.principal.session_id).values(expires_at=now - timedelta(seconds=1)))
    with pytest.raises(NotSignedIn):
        accounts.resolve(second.token)
    with pytest.raises(NotSignedIn):
        accounts.resolve("a token that was never issued")
    accounts.sign_in("idle.user", PASSWORD, "127.0.0.1")
    with store.session() as s:  # (by token: SQLite may give the new session the purged one's id)
        kept = s.scalars(select(StaffSession.token_sha256)).all()
    assert hashlib.sha256(second.token.encode()).hexdigest() not in kept, "ended sessions are purged at the next sign-in"


def test_openapi_describes_every_route_with_its_access(web: dict[str, Any]) -> None:
    r = httpx.get(web["url"] + "/api/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    login = spec["paths"]["/auth/login"]["post"]
    assert login["security"] == [] and login["x-callbot-permission"] == "public"
    imported = spec["paths"]["/kb/import"]["post"]
    assert imported["x-callbot-permission"] == "kb_edit" and "401" in imported["responses"]
    assert spec["paths"]["/kb/intents/{intent_id}"]["get"]["parameters"][0]["schema"]["type"] == "integer"
    assert spec["paths"]["/desk/handovers/{handover_id}/reply"]["post"]["summary"]
    assert len(spec["paths"]) >= 45
