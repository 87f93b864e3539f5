"""The demo knowledge base: composed from the YAML files in knowledge_base/demo/.

Shared dialogue intents (dialogue_intents.yml) are merged into every outbound scenario; a scenario
file may add scenario-specific phrasings and answers for the same intent names.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from knowledge_base.schema import SCHEMA_VERSION

DEMO_DIR = Path(__file__).resolve().parent / "demo"

CHAT_DIALOGUE_INTENTS = ("greet", "request_human", "complain", "goodbye", "ask_identity", "out_of_scope")

FAQ_SCENARIO = {
    "code": "faq",
    "name": "在线客服常见问题",
    "kind": "inbound",
    "description": "证券业务常见问题（开户、转账、交易规则、权限开通等），在线客服与呼入语音导航共用。",
    "include_faq": False,
    "variables": [],
    "steps": [],
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _merge_intents(shared: list[dict[str, Any]], own: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged = {it["name"]: copy.deepcopy(it) for it in shared}
    for it in own:
        base = merged.get(it["name"])
        if base is None:
            merged[it["name"]] = copy.deepcopy(it)
            continue
        for key in ("standard_question", "answer", "category"):
            if it.get(key):
                base[key] = it[key]
        texts = {q if isinstance(q, str) else q["text"] for q in base.get("extension_questions", [])}
        for q in it.get("extension_questions", []):
            text = q if isinstance(q, str) else q["text"]
            if text not in texts:
                base.setdefault("extension_questions", []).append(q)
                texts.add(text)
    return list(merged.values())


def _drop_shared_conflicts(intents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A scenario may move a shared phrase to another intent (scene-scoped meaning): keep the scenario's."""
    owner: dict[str, str] = {}
    for it in intents:
        for q in it.get("extension_questions", []):
            owner[q if isinstance(q, str) else q["text"]] = it["name"]
    for it in intents:
        it["extension_questions"] = [
            q for q in it.get("extension_questions", []) if owner[q if isinstance(q, str) else q["text"]] == it["name"]
        ]
    return intents


def demo_document(demo_dir: Path = DEMO_DIR) -> dict[str, Any]:
    shared = _load(demo_dir / "dialogue_intents.yml")["intents"]
    if (demo_dir / "out_of_scope.yml").is_file():  # chatter examples: every call and the chat reject them
        shared += _load(demo_dir / "out_of_scope.yml")["intents"]
    scenarios = []
    for path in sorted((demo_dir / "scenarios").glob("*.yml")):
        sc = _load(path)
        own = sc.get("intents", [])
        own_texts = {(q if isinstance(q, str) else q["text"]): it["name"] for it in own for q in it.get("extension_questions", [])}
        base = copy.deepcopy(shared)
        for it in base:  # scenario-specific phrasing wins over the shared one
            it["extension_questions"] = [
                q for q in it["extension_questions"] if own_texts.get(q if isinstance(q, str) else q["text"], it["name"]) == it["name"]
            ]
        sc["intents"] = _drop_shared_conflicts(_merge_intents(base, own))
        scenarios.append(sc)
    faq_intents: list[dict[str, Any]] = []
    for path in sorted(demo_dir.glob("faq_*.yml")):
        faq_intents.extend(_load(path)["intents"])
    # Chat needs the conversational intents too ("转人工" is a request, not a question about agents).
    chat_intents = [copy.deepcopy(it) for it in shared if it["name"] in CHAT_DIALOGUE_INTENTS]
    chat_texts = {q if isinstance(q, str) else q["text"] for it in chat_intents for q in it["extension_questions"]}
    chat_texts |= {it["standard_question"] for it in chat_intents}
    for it in faq_intents:
        it["extension_questions"] = [q for q in it["extension_questions"] if (q if isinstance(q, str) else q["text"]) not in chat_texts]
    scenarios.append({**FAQ_SCENARIO, "intents": faq_intents + chat_intents})
    return {
        "schema_version": SCHEMA_VERSION,
        "scenarios": scenarios,
        "compliance_rules": _load(demo_dir / "compliance.yml")["compliance_rules"],
        "complaint_labels": _load(demo_dir / "complaint_labels.yml")["complaint_labels"],
    }


def write_demo_file(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(demo_document(), allow_unicode=True, sort_keys=False, width=200), encoding="utf-8")
    return target
