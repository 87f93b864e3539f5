"""The knowledge-base store: CRUD, versioning, audit, scenario scoping (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from knowledge_base.db import Store
from knowledge_base.errors import CallbotError, NotFound
from knowledge_base.models import AuditEntry, ExtensionQuestion, Intent, IntentKind, ReviewStatus, Scenario, ScenarioKind
from knowledge_base.service import KnowledgeBase


def _two_scenarios(store: Store) -> tuple[int, int]:
    """Scenario A treats 找他干嘛 as ask_purpose; scenario B as wrong_person (scene-scoped meaning)."""
    with store.session("tester") as s:
        a = Scenario(code="scene_a", name="A", kind=ScenarioKind.outbound)
        b = Scenario(code="scene_b", name="B", kind=ScenarioKind.outbound)
        ia = Intent(scenario=a, name="ask_purpose", kind=IntentKind.dialogue, standard_question="什么事")
        ib = Intent(scenario=b, name="wrong_person", kind=IntentKind.dialogue, standard_question="你打错了")
        ia.extension_questions.append(ExtensionQuestion(text="找他干嘛"))
        ib.extension_questions.append(ExtensionQuestion(text="找他干嘛"))
        s.add_all([a, b])
        s.flush()
        return ia.id, ib.id


def _check_store(store: Store) -> None:
    kb = KnowledgeBase(store)
    v0 = store.kb_version()
    ia, ib = _two_scenarios(store)
    v1 = store.kb_version()
    assert v1 == v0 + 1, "one committed transaction bumps the version exactly once"

    # The same sentence lives in two scenarios under different intents.
    with store.session() as s:
        rows = s.execute(
            select(Scenario.code, Intent.name).join(Intent).join(ExtensionQuestion).where(ExtensionQuestion.text == "找他干嘛")
        ).all()
    assert sorted(rows) == [("scene_a", "ask_purpose"), ("scene_b", "wrong_person")]

    # Create, read, update, delete — each a new version, each audited with its actor.
    q = kb.add_question(ia, "  找他有什么事  ", author="alice")
    assert q["text"] == "找他有什么事" and q["status"] == "approved"
    assert store.kb_version() == v1 + 1
    assert [x["text"] for x in kb.intent(ia)["extension_questions"]] == ["找他干嘛", "找他有什么事"]
    kb.update_question(q["id"], actor="bob", status=ReviewStatus.rejected)
    assert store.kb_version() == v1 + 2
    updated = kb.intent(ia)["extension_questions"][1]
    assert updated["status"] == "rejected" and updated["reviewed_by"] == "bob"
    kb.delete_question(q["id"], actor="carol")
    assert store.kb_version() == v1 + 3
    with store.session() as s:
        audit = s.scalars(select(AuditEntry).where(AuditEntry.entity == "ExtensionQuestion").order_by(AuditEntry.id)).all()
    actions = [(a.action, a.actor) for a in audit][-3:]
    assert actions == [("create", "alice"), ("update", "bob"), ("delete", "carol")]
    assert audit[-2].changes["status"] == ["approved", "rejected"]
    assert audit[-1].kb_version == v1 + 3

    # A no-op edit does not change the version; a rejected edit changes nothing.
    kb.update_question(kb.intent(ia)["extension_questions"][0]["id"], actor="bob", status=ReviewStatus.approved)
    assert store.kb_version() == v1 + 3
    with pytest.raises(CallbotError, match="already has"):
        kb.add_question(ia, "找他干嘛", author="alice")
    with pytest.raises(CallbotError, match="at most 200"):
        kb.add_question(ia, "长" * 201, author="alice")
    with pytest.raises(NotFound):
        kb.delete_question(999_999, actor="x")
    assert store.kb_version() == v1 + 3

    # The database itself refuses a duplicate sentence within one intent.
    with pytest.raises(IntegrityError), store.session() as s:
        s.add(ExtensionQuestion(intent_id=ib, text="找他干嘛"))
    assert store.kb_version() == v1 + 3

    # Deleting a scenario removes its intents and questions (and counts as one edit).
    with store.session() as s:
        s.delete(s.scalar(select(Scenario).where(Scenario.code == "scene_b")))
    with store.session() as s:
        assert s.scalar(select(func.count(Intent.id)).where(Intent.id == ib)) == 0
        assert s.scalar(select(func.count(ExtensionQuestion.id)).where(ExtensionQuestion.intent_id == ib)) == 0
    assert store.kb_version() == v1 + 4


def test_store_on_sqlite(store: Store) -> None:
    _check_store(store)


@pytest.mark.postgres
def test_store_on_postgresql(postgres_url: str) -> None:
    store = Store(postgres_url)
    store.migrate()
    try:
        _check_store(store)
    finally:
        store.dispose()


@pytest.mark.postgres
def test_demo_import_on_postgresql(postgres_url: str, demo_file: Path) -> None:
    store = Store(postgres_url)
    store.migrate()
    try:
        kb = KnowledgeBase(store)
        kb.import_files([demo_file])
        counts = kb.counts()
        assert counts.faq_intents >= 40 and counts.scenarios >= 4
        version = store.kb_version()
        kb.import_files([demo_file])  # idempotent: nothing new, no version bump
        assert store.kb_version() == version
    finally:
        store.dispose()


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.migrate()
    store.migrate()
    assert store.kb_version() == 0


def test_processes_started_together_all_migrate_one_sqlite_file(tmp_path: Path) -> None:
    """Two `callbot model release` runs started at once once failed with "table hand_over already exists": both
    read the old revision. Four processes released by one start signal must all succeed and leave one schema."""
    import subprocess
    import sys
    import time

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    go = tmp_path / "go"
    script = ("import pathlib, time, sys\nfrom knowledge_base.db import Store\nstore = Store(sys.argv[1])\n"
              "while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.005)\nstore.migrate()\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, url, str(go)], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(3)  # every process has imported alembic and SQLAlchemy and waits for the signal
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    store = Store(url)
    try:
        assert store.kb_version() == 0
    finally:
        store.dispose()


def test_upgrading_an_existing_database_declares_the_old_step_outcomes(tmp_path: Path) -> None:
    """A database made before step outcomes existed (revision 0001) keeps what its terminal steps meant, and
    the dispute path of 业务办理回访 — recorded as completed before — becomes disputed."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from knowledge_base.db import MIGRATIONS_DIR

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    now = "2026-11-30 00:00:00"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO scenario (id, code, name, kind, description, language, include_faq, variables, "
                          "created_at, updated_at) VALUES (1, 'service_followup', '回访', 'outbound', '', 'zh', 1, '[]', :t, :t)"), {"t": now})
        for i, (code, terminal) in enumerate([("not_own_handling", 0), ("not_own_close", 1), ("refuse_close", 1),
                                               ("firm_own_close", 1), ("ask", 0)]):
            conn.execute(text("INSERT INTO script_step (scenario_id, code, position, kind, prompt, reprompt, expected_intents, "
                              "transitions, terminal, created_at, updated_at) VALUES (1, :c, :p, 'closing', 'x', '', '[]', '{}', :term, :t, :t)"),
                         {"c": code, "p": i, "term": terminal, "t": now})
    engine.dispose()
    store = Store(url)
    store.migrate()
    with store.engine.connect() as conn:
        outcomes = dict(conn.execute(text("SELECT code, outcome FROM script_step")).all())
    assert outcomes == {"not_own_handling": "disputed", "not_own_close": "disputed", "refuse_close": "refused",
                        "firm_own_close": "completed", "ask": None}
    store.dispose()
