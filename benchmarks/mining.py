"""Quality of mined extension questions (`callbot nlu mine`), on wordings whose intent is known.

Recorded conversations with labels do not exist here, so the held-out fifth of the demo FAQ's
extension questions (nlu.data.kb_split: human-written, never trained on) stands in for what callers
said: they are taken out of a copy of the knowledge base, recorded as caller turns of FAQ chats, and
mined. Precision is the share of proposals filed under the intent staff wrote them for; coverage is the
share of held-out wordings proposed at all. Generated questions (`python -m benchmarks expansion`) are
the comparison: their "useful" share is judged by e5, these are checked against the staff's labels.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import delete, select

from benchmarks.common import available_models, save
from callbot.settings import get_settings
from knowledge_base.db import Store
from knowledge_base.demo import write_demo_file
from knowledge_base.models import Conversation, ConversationTurn, ExtensionQuestion, Intent, IntentKind, Scenario
from knowledge_base.service import KnowledgeBase
from nlu.data.kb_split import is_heldout
from nlu.encoders.sentence_encoder import SentenceEncoder
from nlu.matcher import Matcher, Thresholds
from nlu.mining import caller_utterances, mine


def _heldout_kb(tmp: Path) -> tuple[Store, dict[str, str]]:
    """A demo KB without its held-out FAQ questions, which become one recorded chat each."""
    store = Store(f"sqlite:///{tmp / 'mining.db'}")
    store.migrate()
    KnowledgeBase(store).import_files([write_demo_file(tmp / "demo.yaml")])
    gold: dict[str, str] = {}
    with store.session("bench") as s:
        faq = s.scalar(select(Scenario.id).where(Scenario.code == "faq"))
        rows = s.execute(select(ExtensionQuestion.id, ExtensionQuestion.text, Intent.name).join(Intent)
                         .where(Intent.kind == IntentKind.faq)).all()
        held = [(qid, text, intent) for qid, text, intent in rows if is_heldout(text)]
        s.execute(delete(ExtensionQuestion).where(ExtensionQuestion.id.in_([q for q, _, _ in held])))
        for n, (_, text, intent) in enumerate(held):
            conv = Conversation(external_id=f"bench-{n}", channel="chat", scenario_id=faq)
            conv.turns = [ConversationTurn(seq=1, speaker="user", text=text)]
            s.add(conv)
            gold[text] = intent
    return store, gold


def run(console: Console) -> dict:
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store, gold = _heldout_kb(tmp)
        for name, path in available_models():
            # Vectors are keyed by text: a persistent directory spares re-encoding the KB on the next run.
            matcher = Matcher(store, SentenceEncoder(path, threads=2), get_settings().cache_dir / "vectors" / "bench-mining",
                              Thresholds.for_model(path),
                              refresh_interval_s=0.0)
            report = mine(matcher, store, caller_utterances(store), limit=len(gold), progress=True)
            proposed = report.proposed
            correct = [m for m in proposed if gold.get(m.text) == m.intent]
            wrong = [m for m in proposed if gold.get(m.text) not in (None, m.intent)]
            results[name] = {
                "heldout_wordings": len(gold), "proposed": len(proposed),
                "precision": round(len(correct) / max(1, len(proposed)), 4),
                "coverage": round(len(correct) / max(1, len(gold)), 4),
                "skipped": report.skipped,
                "examples_correct": [f"{m.text} → {m.intent}" for m in correct[:5]],
                "examples_wrong": [f"{m.text} → {m.intent} (staff: {gold[m.text]})" for m in wrong[:5]],
            }
    table = Table("model", "held-out wordings", "proposed", "precision", "correct / all wordings", "skipped",
                  title="Mining held-out FAQ wordings as if callers had said them")
    for name, r in results.items():
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(r["skipped"].items()))
        table.add_row(name, str(r["heldout_wordings"]), str(r["proposed"]), f"{r['precision']:.3f}", f"{r['coverage']:.3f}", skipped)
    console.print(table)
    for name, r in results.items():
        console.print(f"[bold]{name}[/bold] wrong intent, e.g.: " + "; ".join(r["examples_wrong"][:3]))
    save("mining", results)
    return results
