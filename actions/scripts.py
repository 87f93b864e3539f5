"""Loading a scenario's script engine from the knowledge base (cached per KB version)."""

from __future__ import annotations

from sqlalchemy import select

from actions.script_engine import ScriptEngine, Step
from callbot.context import get_store
from knowledge_base.models import Intent, Scenario

_cache: dict[tuple[str, int], ScriptEngine] = {}


def load_engine(scenario: str) -> ScriptEngine | None:
    store = get_store()
    key = (scenario, store.kb_version())
    if key in _cache:
        return _cache[key]
    with store.session() as s:
        sc = s.scalar(select(Scenario).where(Scenario.code == scenario, Scenario.live()))
        if sc is None or not sc.steps:
            return None
        steps = [Step(st.code, st.kind.value, st.prompt, st.reprompt, dict(st.transitions), st.terminal, st.outcome)
                 for st in sc.steps]
        answers = {it.name: it.answer for it in s.scalars(select(Intent).where(Intent.scenario_id == sc.id)) if it.answer}
    engine = ScriptEngine(steps, answers)
    _cache.clear()  # one KB version at a time
    _cache[key] = engine
    return engine


def scenario_variables(scenario: str) -> list[str]:
    with get_store().session() as s:
        sc = s.scalar(select(Scenario).where(Scenario.code == scenario, Scenario.live()))
        return list(sc.variables) if sc else []
