"""The brief that held-out writers get, printed from a knowledge-base folder: intents with their standard question only,
the call scripts (steps and what the bot says), the FAQ topics. Never the extension questions: a writer who has read
them writes in the knowledge base's style, and the held-out sets would flatter every model tuned on it (nlu/heldout.py).

    python -m nlu.writer_brief [KB_FOLDER] > /tmp/splitN/brief.md     (default: knowledge_base/demo)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

DEMO = Path(__file__).resolve().parents[1] / "knowledge_base" / "demo"


def _intents(path: Path) -> list[dict[str, Any]]:
    return list((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("intents") or [])


def render(kb: Path = DEMO) -> str:
    """The brief as Markdown. Raises FileNotFoundError for a folder without dialogue_intents.yml."""
    out = ["# Brief: a Chinese securities firm's call-centre bot (outbound notice calls + online FAQ)", "",
           "## Dialogue intents (what a caller says during an outbound call)", ""]
    out += [f"- `{i['name']}` — standard question: {i.get('standard_question', '')}"
            for i in _intents(kb / "dialogue_intents.yml")]
    out += ["", "## Outbound scenarios (call scripts)", ""]
    for path in sorted((kb / "scenarios").glob("*.yml")):
        s = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if s.get("kind", "outbound") != "outbound":
            continue
        out += [f"### `{s['code']}` {s.get('name', '')}", s.get("description", ""),
                f"Variables: {', '.join(s.get('variables') or [])}", ""]
        out += [f"- step `{st['code']}`: bot says: {st.get('prompt', '')}" for st in s.get("steps") or []]
        out += [f"- scenario intent `{i['name']}` — standard question: {i.get('standard_question', '')}"
                for i in s.get("intents") or []]
        out.append("")
    out += ["", "## FAQ intents (questions customers ask; standard question only)", ""]
    for path in sorted(kb.glob("faq_*.yml")):
        out += [f"- `{i['name']}` — {i.get('standard_question', '')}" for i in _intents(path)]
    out += ["", "## Out of scope",
            "Chatter unrelated to the firm's business (weather, jokes, personal life, other companies' products) "
            "should match nothing."]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    kb = Path(argv[0]) if argv else DEMO
    if not (kb / "dialogue_intents.yml").is_file():
        print(f"error: {kb} has no dialogue_intents.yml; give a knowledge-base folder like knowledge_base/demo",
              file=sys.stderr)
        return 2
    sys.stdout.write(render(kb))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
