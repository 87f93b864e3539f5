"""Staff accounts, sign-in with rate limiting, browser sessions and API tokens (all in the database)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select

from callbot.auth.errors import BadCredentials, NotSignedIn, TooManyAttempts
from callbot.auth.passwords import check_strength, hash_password, needs_rehash, verify_password
from callbot.settings import AuthSettings
from knowledge_base.db import Store
from knowledge_base.errors import CallbotError, NotFound
from knowledge_base.models import LoginAttempt, Role, StaffSession, StaffUser, utcnow

USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-@")


@dataclass(frozen=True)
class Principal:
    """Who is asking: a staff user (by session or API token) or the internal service (Rasa)."""

    username: str
    role: Role | None  # None = the internal service
    session_kind: str  # browser | api | service
    csrf_token: str = ""
    session_id: int | None = None
    display_name: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"username": self.username, "display_name": self.display_name, "role": self.role.value if self.role else None,
                "session": self.session_kind}


@dataclass(frozen=True)
class IssuedSession:
    token: str
    csrf_token: str
    principal: Principal


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _user_json(u: StaffUser) -> dict[str, Any]:
    return {"id": u.id, "username": u.username, "display_name": u.display_name, "role": u.role.value,
            "active": u.active, "created_at": u.created_at.isoformat()}


class StaffAccounts:
    def __init__(self, store: Store, settings: AuthSettings):
        self.store = store
        self.settings = settings

    # ------------------------------------------------------------------ users
    def create_user(self, username: str, password: str, role: Role, actor: str, display_name: str = "") -> dict[str, Any]:
        username = username.strip().lower()
        if not username or len(username) > 64 or not set(username) <= USERNAME_CHARS:
            raise CallbotError("A user name is 1–64 characters of a-z, 0-9, '.', '_', '-', '@'.")
        check_strength(password, self.settings.min_password_length)
        with self.store.session(actor) as s:
            if s.scalar(select(StaffUser.id).where(StaffUser.username == username)) is not None:
                raise CallbotError(f"The user {username!r} exists already; change the password with `callbot user password`.")
            user = StaffUser(username=username, display_name=display_name or username, role=role,
                             password_hash=hash_password(password), active=True)
            s.add(user)
            s.flush()
            return _user_json(user)

    def users(self) -> list[dict[str, Any]]:
        with self.store.session() as s:
            return [_user_json(u) for u in s.scalars(select(StaffUser).order_by(StaffUser.username))]

    def count_admins(self) -> int:
        with self.store.session() as s:
            return int(s.scalar(select(func.count()).select_from(StaffUser)
                                .where(StaffUser.role == Role.admin, StaffUser.active.is_(True))) or 0)

    def update_user(self, username: str, actor: str, role: Role | None = None, active: bool | None = None,
                    password: str | None = None) -> dict[str, Any]:
        with self.store.session(actor) as s:
            user = s.scalar(select(StaffUser).where(StaffUser.username == username.strip().lower()))
            if user is None:
                raise NotFound(f"No staff user {username!r}.")
            demoted = (role is not None and role != Role.admin) or active is False
            if user.role == Role.admin and user.active and demoted and self.count_admins() <= 1:
                raise CallbotError("This is the last active admin: create another admin first.")
            if role is not None:
                user.role = role
            if active is not None:
                user.active = active
            if password is not None:
                check_strength(password, self.settings.min_password_length)
                user.password_hash = hash_password(password)
            if password is not None or active is False or role is not None:
                # A changed password, role or a disabled account ends every session the user had.
                s.execute(delete(StaffSession).where(StaffSession.user_id == user.id))
            s.flush()
            return _user_json(user)

    # ------------------------------------------------------------------ sign-in
    def sign_in(self, username: str, password: str, client: str) -> IssuedSession:
        username = (username or "").strip().lower()[:64]
        now = utcnow().replace(tzinfo=None)
        window = timedelta(minutes=self.settings.login_window_minutes)
        with self.store.session("auth") as s:
            # Housekeeping on each sign-in (indexed deletes): forgotten failures and ended sessions do not pile up.
            s.execute(delete(LoginAttempt).where(LoginAttempt.at <= now - window))
            s.execute(delete(StaffSession).where(StaffSession.expires_at <= now))
            failures = s.scalars(select(LoginAttempt.at).where(LoginAttempt.username == username, LoginAttempt.client == client,
                                                               LoginAttempt.at > now - window).order_by(LoginAttempt.at)).all()
            if len(failures) >= self.settings.login_max_failures:
                retry = int((failures[0] + window - now).total_seconds()) + 1
                raise TooManyAttempts(f"Too many failed sign-ins for {username!r}: try again in {retry // 60 + 1} min.", retry)
            user = s.scalar(select(StaffUser).where(StaffUser.username == username))
            issued: IssuedSession | None
            ok = verify_password(user.password_hash if user else None, password or "")
            if not ok or user is None or not user.active:
                s.add(LoginAttempt(username=username, client=client[:64], at=now))
                issued = None
            else:
                s.execute(delete(LoginAttempt).where(LoginAttempt.username == username, LoginAttempt.client == client))
                if needs_rehash(user.password_hash):
                    user.password_hash = hash_password(password)
                issued = self._issue(s, user, "browser", timedelta(hours=self.settings.session_max_hours), "")
        if issued is None:  # raised after the commit: the failed attempt must be counted
            raise BadCredentials("Wrong user name or password (or the account is disabled).")
        return issued

    def issue_api_token(self, username: str, label: str, actor: str) -> IssuedSession:
        with self.store.session(actor) as s:
            user = s.scalar(select(StaffUser).where(StaffUser.username == username.strip().lower()))
            if user is None or not user.active:
                raise NotFound(f"No active staff user {username!r}.")
            return self._issue(s, user, "api", timedelta(days=self.settings.api_token_days), label)

    def _issue(self, s: Any, user: StaffUser, kind: str, lifetime: timedelta, label: str) -> IssuedSession:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24) if kind == "browser" else ""
        now = utcnow().replace(tzinfo=None)
        row = StaffSession(token_sha256=_sha(token), user_id=user.id, kind=kind, csrf_token=csrf, label=label[:200],
                           created_at=now, last_seen_at=now, expires_at=now + lifetime)
        s.add(row)
        s.flush()
        return IssuedSession(token, csrf, Principal(user.username, user.role, kind, csrf, row.id, user.display_name))

    def resolve(self, token: str) -> Principal:
        """The principal behind a session cookie or API token; expired, revoked or disabled → NotSignedIn."""
        now = utcnow().replace(tzinfo=None)
        with self.store.session("auth") as s:
            row = s.scalar(select(StaffSession).where(StaffSession.token_sha256 == _sha(token)))
            if row is None or row.expires_at <= now or not row.user.active:
                raise NotSignedIn("Your session has ended: sign in again.")
            if row.kind == "browser":
                idle = timedelta(minutes=self.settings.session_idle_minutes)
                if row.last_seen_at + idle <= now:
                    s.delete(row)
                    raise NotSignedIn("Your session ended after a period of inactivity: sign in again.")
                if (now - row.last_seen_at).total_seconds() > 60:  # one write a minute, not one per request
                    row.last_seen_at = now
            return Principal(row.user.username, row.user.role, row.kind, row.csrf_token, row.id, row.user.display_name)

    def sign_out(self, token: str) -> None:
        with self.store.session("auth") as s:
            s.execute(delete(StaffSession).where(StaffSession.token_sha256 == _sha(token)))
