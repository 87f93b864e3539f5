"""Engine, sessions, migrations, and the KB version + audit hooks."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from knowledge_base.errors import DatabaseLocked, DatabaseUnavailable
from knowledge_base.models import AUDITED_ENTITIES, KB_ENTITIES, AuditEntry, KnowledgeBaseState

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, busy_timeout_s: float = 5.0) -> Engine:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def describe_db_error(exc: OperationalError, url: str) -> Exception:
    message = str(exc.orig) if exc.orig is not None else str(exc)
    where = url.split("@")[-1]  # never echo a password
    if "database is locked" in message:
        return DatabaseLocked(
            f"The database {where} is locked by another process (a long transaction or another tool holds it). "
            "Nothing was changed. Close the other program or retry in a moment; "
            "raise CALLBOT_SQLITE_BUSY_TIMEOUT_S to wait longer."
        )
    if "unable to open database" in message or "could not connect" in message or "Connection refused" in message:
        return DatabaseUnavailable(
            f"Cannot reach the database {where}: {message.strip()}. "
            "Check CALLBOT_DATABASE_URL and that the server is running."
        )
    return DatabaseUnavailable(f"Database error on {where}: {message.strip()}")


# Any fixed number: the PostgreSQL advisory lock that serialises schema upgrades across processes.
MIGRATION_LOCK_KEY = 7_304_211


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """One upgrade at a time on a SQLite file: two processes started together (two `callbot model release`
    runs, a web app and a CLI) otherwise both read the old revision and the second fails on "table … already
    exists". A lock file beside the database serialises them; PostgreSQL uses an advisory lock in upgrade()."""
    database = engine.url.database or ""
    if engine.dialect.name != "sqlite" or database in ("", ":memory:"):
        yield
        return
    with open(f"{database}.migrate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent; safe when several processes start at once)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    with _migration_lock(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """Owns the engine and hands out sessions that version and audit KB edits."""

    def __init__(self, url: str, busy_timeout_s: float = 5.0):
        self.url = url
        self.engine = make_engine(url, busy_timeout_s)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self, actor: str = "system") -> Iterator[Session]:
        """A transaction: commits on success, rolls back on error; DB errors become clear messages."""
        session = self._sessions()
        session.info["actor"] = actor
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            raise describe_db_error(exc, self.url) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def migrate(self) -> None:
        try:
            upgrade(self.engine)
        except OperationalError as exc:
            raise describe_db_error(exc, self.url) from exc

    def kb_version(self) -> int:
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(select(KnowledgeBaseState.version).where(KnowledgeBaseState.id == 1)).scalar() or 0)
        except OperationalError as exc:
            raise describe_db_error(exc, self.url) from exc

    def intent_keys(self) -> list[str]:
        """Every intent as ``scenario/intent``, sorted: which knowledge base a model was measured on."""
        from knowledge_base.models import Intent, Scenario

        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(Scenario.code, Intent.name).join(Intent, Intent.scenario_id == Scenario.id)
                                    .where(Scenario.live())).all()
        except OperationalError as exc:
            raise describe_db_error(exc, self.url) from exc
        return sorted(f"{code}/{name}" for code, name in rows)

    def dispose(self) -> None:
        self.engine.dispose()


# Never written to the audit log: the log says that a password changed, not what it became.
SECRET_COLUMNS = frozenset({"password_hash"})


def _snapshot(obj: Any) -> dict[str, Any]:
    mapper = inspect(obj).mapper
    return {c.key: "***" if c.key in SECRET_COLUMNS else _jsonable(getattr(obj, c.key)) for c in mapper.column_attrs}


def _jsonable(value: Any) -> Any:
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):
        return value.value  # enums
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _diff(obj: Any) -> dict[str, Any]:
    state = inspect(obj)
    changes: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        if attr.key in ("updated_at", "created_at"):
            continue
        hist = state.attrs[attr.key].history
        if hist.has_changes():
            old = hist.deleted[0] if hist.deleted else None
            new = hist.added[0] if hist.added else None
            if old != new:
                changes[attr.key] = ["***", "***"] if attr.key in SECRET_COLUMNS else [_jsonable(old), _jsonable(new)]
    return changes


@event.listens_for(Session, "after_flush")
def _version_and_audit(session: Session, _ctx: Any) -> None:
    records: list[tuple[str, Any, dict[str, Any]]] = []
    for obj in session.new:
        if isinstance(obj, AUDITED_ENTITIES):
            records.append(("create", obj, _snapshot(obj)))
    for obj in session.dirty:
        if isinstance(obj, AUDITED_ENTITIES):
            changes = _diff(obj)
            if changes:
                records.append(("update", obj, changes))
    for obj in session.deleted:
        if isinstance(obj, AUDITED_ENTITIES):
            records.append(("delete", obj, _snapshot(obj)))
    if not records:
        return
    conn = session.connection()
    touches_kb = any(isinstance(obj, KB_ENTITIES) for _, obj, _ in records)
    if touches_kb and not session.info.get("kb_bumped"):
        # One bump per transaction: readers see a new version exactly when the edit commits.
        conn.execute(update(KnowledgeBaseState).where(KnowledgeBaseState.id == 1).values(version=KnowledgeBaseState.version + 1))
        session.info["kb_bumped"] = True
    version = conn.execute(select(KnowledgeBaseState.version).where(KnowledgeBaseState.id == 1)).scalar() or 0
    actor = session.info.get("actor", "system")
    conn.execute(
        AuditEntry.__table__.insert(),
        [
            {"actor": actor, "action": action, "entity": type(obj).__name__, "entity_id": getattr(obj, "id", None),
             "changes": changes, "kb_version": version}
            for action, obj, changes in records
        ],
    )


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _reset_bump(session: Session) -> None:
    session.info.pop("kb_bumped", None)


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
