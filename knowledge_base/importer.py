"""`callbot kb import`: read, validate everything, then write in one transaction (or nothing)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from knowledge_base.compliance_rules import rule_problems
from knowledge_base.errors import ImportRejected
from knowledge_base.models import (
    ComplaintLabel,
    ComplianceRule,
    ExtensionQuestion,
    Intent,
    Outcome,
    Scenario,
    ScenarioKind,
    ScriptStep,
)
from knowledge_base.schema import (
    BUILTIN_INTENTS,
    END,
    SCHEMA_VERSION,
    IntentDoc,
    KnowledgeBaseDoc,
    ScenarioDoc,
)

MAX_FILE_BYTES = 50 * 1024 * 1024
CSV_COLUMNS = ["scenario", "intent", "kind", "standard_question", "answer", "text", "source", "status", "author"]
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Filled in by the engine, not by the scenario's customer data: the categories of the caller's complaint, in the
# knowledge base's words, or "" ("您反映的{complaint_topics}问题").
SYSTEM_VARIABLES = frozenset({"complaint_topics"})

Path_ = tuple[Any, ...]


@dataclass
class ImportBatch:
    """What one or more files ask to write, with where each record came from."""

    doc: KnowledgeBaseDoc
    loose_intents: list[tuple[str, IntentDoc, str]] = field(default_factory=list)  # (scenario, intent, origin) from CSV


@dataclass
class ImportReport:
    created: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    updated: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unchanged: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    version: int = 0

    def summary(self) -> str:
        kinds = sorted(set(self.created) | set(self.updated) | set(self.unchanged))
        parts = [f"{k}: {self.created.get(k, 0)} new, {self.updated.get(k, 0)} changed, {self.unchanged.get(k, 0)} unchanged" for k in kinds]
        return "; ".join(parts) + f". Knowledge-base version is now {self.version}."


class _LineMap:
    """Maps a record path like ('scenarios', 0, 'steps', 2) to a 1-based source line."""

    def __init__(self, lines: dict[Path_, int] | None = None):
        self.lines = lines or {}

    @classmethod
    def from_yaml(cls, text: str) -> _LineMap:
        lines: dict[Path_, int] = {}

        def walk(node: yaml.Node, path: Path_) -> None:
            lines[path] = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    lines[(*path, key.value)] = key.start_mark.line + 1
                    walk(value, (*path, key.value))
                    lines[(*path, key.value)] = key.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    walk(item, (*path, i))

        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return cls()
        if root is not None:
            walk(root, ())
        return cls(lines)

    def line(self, path: Sequence[Any]) -> int | None:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def _where(file: str, lines: _LineMap, path: Sequence[Any]) -> str:
    line = lines.line(path)
    dotted = ""
    for part in path:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else str(part))
    loc = f"{file}:{line}" if line else file
    return f"{loc}: {dotted or '(document)'}"


def read_text(path: Path) -> str:
    """Read a file as UTF-8 text, or explain exactly why it cannot be."""
    if not path.exists():
        raise ImportRejected([f"{path}: file not found"])
    if path.is_dir():
        raise ImportRejected([f"{path}: is a directory; give a .yaml, .yml, .json or .csv file"])
    size = path.stat().st_size
    if size == 0:
        raise ImportRejected([f"{path}: the file is empty"])
    if size > MAX_FILE_BYTES:
        raise ImportRejected([f"{path}: {size / 1e6:.0f} MB is over the {MAX_FILE_BYTES // 1_000_000} MB limit; split it into several files"])
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise ImportRejected([f"{path}: looks like a binary file (contains NUL bytes); export the knowledge base as YAML, JSON or CSV text"])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ImportRejected([
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8 (files from Excel are often GBK: `iconv -f GBK -t UTF-8`)"
        ]) from None


def parse_file(path: Path) -> tuple[dict[str, Any] | list[dict[str, str]], _LineMap, str]:
    """Returns (data, line map, format)."""
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ImportRejected([f"{path}{line}: YAML syntax error: {problem}"]) from None
        return _require_mapping(path, data), _LineMap.from_yaml(text), "yaml"
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportRejected([f"{path}:{exc.lineno}: JSON syntax error: {exc.msg} (column {exc.colno})"]) from None
        return _require_mapping(path, data), _LineMap.from_yaml(text), "json"
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        missing = [c for c in ("scenario", "intent", "standard_question", "text") if c not in header]
        unknown = [c for c in header if c not in CSV_COLUMNS]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing column(s) {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown column(s) {', '.join(unknown)}")
            raise ImportRejected([f"{path}:1: CSV header: {'; '.join(parts)}; expected {','.join(CSV_COLUMNS)}"])
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise ImportRejected([f"{path}:{reader.line_num}: CSV error: {exc}"]) from None
        if not rows:
            raise ImportRejected([f"{path}: the CSV has a header but no rows"])
        return rows, _LineMap(), "csv"
    raise ImportRejected([f"{path}: unknown file type '{suffix or '(none)'}'; use .yaml, .yml, .json or .csv"])


def _require_mapping(path: Path, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ImportRejected([f"{path}:1: the document must be a mapping with schema_version and scenarios (see docs/kb-schema.md)"])
    return data


def _pydantic_problems(file: str, lines: _LineMap, exc: ValidationError, prefix: Path_ = ()) -> list[str]:
    out = []
    for err in exc.errors():
        loc = (*prefix, *[p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling against docs/kb-schema.md)"
        elif err["type"] == "string_pattern_mismatch" and loc and loc[-1] in ("code", "name", "rule_id"):
            msg = f"{err['input']!r} is not a valid identifier: use lower-case letters, digits and _ (e.g. ipo_notice)"
        out.append(f"{_where(file, lines, loc)}: {msg}")
    return out


def _csv_to_intents(file: str, rows: list[dict[str, str]]) -> tuple[list[tuple[str, IntentDoc, str]], list[str]]:
    problems: list[str] = []
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    origins: dict[tuple[str, str], int] = {}
    for idx, row in enumerate(rows):
        line = idx + 2  # header is line 1
        if None in row:
            problems.append(f"{file}:{line}: more fields than the header has columns (quote text containing commas)")
            continue
        scenario, intent = (row.get("scenario") or "").strip(), (row.get("intent") or "").strip()
        if not scenario or not intent:
            problems.append(f"{file}:{line}: scenario and intent are required")
            continue
        key = (scenario, intent)
        entry = grouped.setdefault(key, {
            "name": intent, "kind": (row.get("kind") or "faq").strip(),
            "standard_question": row.get("standard_question", ""), "answer": (row.get("answer") or None),
            "extension_questions": [],
        })
        origins.setdefault(key, line)
        if (row.get("standard_question") or "") != entry["standard_question"]:
            problems.append(f"{file}:{line}: intent {scenario}/{intent} has a different standard_question than on line {origins[key]}")
        if row.get("text", "").strip():
            q = {"text": row["text"]}
            for col in ("source", "status", "author"):
                if row.get(col):
                    q[col] = row[col].strip()
            entry["extension_questions"].append((line, q))
    out: list[tuple[str, IntentDoc, str]] = []
    for (scenario, intent), entry in grouped.items():
        qlines = [line for line, _ in entry["extension_questions"]]
        entry["extension_questions"] = [q for _, q in entry["extension_questions"]]
        try:
            out.append((scenario, IntentDoc.model_validate(entry), f"{file}:{origins[(scenario, intent)]}"))
        except ValidationError as exc:
            for err in exc.errors():
                loc = err["loc"]
                line = qlines[loc[1]] if len(loc) > 1 and loc[0] == "extension_questions" and isinstance(loc[1], int) else origins[(scenario, intent)]
                problems.append(f"{file}:{line}: {'.'.join(str(p) for p in loc)}: {err['msg']}")
    return out, problems


def _check_scenario(file: str, lines: _LineMap, i: int, sc: ScenarioDoc, known_intents: set[str]) -> list[str]:
    problems: list[str] = []
    base: Path_ = ("scenarios", i)
    intent_names = {it.name for it in sc.intents} | known_intents | BUILTIN_INTENTS
    step_codes = {s.code for s in sc.steps}
    declared = set(sc.variables) | SYSTEM_VARIABLES

    def dup(items: Iterable[str], what: str, key: str, sub: str) -> None:
        seen: dict[str, int] = {}
        for j, name in enumerate(items):
            if name in seen:
                problems.append(f"{_where(file, lines, (*base, sub, j, key))}: duplicate {what} {name!r} (first at index {seen[name]})")
            seen.setdefault(name, j)

    dup((s.code for s in sc.steps), "step code", "code", "steps")
    dup((it.name for it in sc.intents), "intent name", "name", "intents")
    for j, step in enumerate(sc.steps):
        if step.terminal and step.outcome is None:
            outcomes = ", ".join(o.value for o in Outcome)
            problems.append(f"{_where(file, lines, (*base, 'steps', j, 'terminal'))}: terminal step {step.code!r} has no outcome; "
                            f"add `outcome:` (one of {outcomes}) to say what a call that ends here is recorded as")
        for intent in step.expected_intents:
            if intent not in intent_names:
                problems.append(f"{_where(file, lines, (*base, 'steps', j, 'expected_intents'))}: intent {intent!r} is not defined in scenario {sc.code!r}")
        for intent, target in step.transitions.items():
            if intent not in intent_names:
                problems.append(f"{_where(file, lines, (*base, 'steps', j, 'transitions', intent))}: transition on unknown intent {intent!r}")
            if target != END and target not in step_codes:
                problems.append(f"{_where(file, lines, (*base, 'steps', j, 'transitions', intent))}: goes to step {target!r}, which scenario {sc.code!r} does not have (use a step code or 'end')")
        for fld in ("prompt", "reprompt"):
            for var in _VARIABLE.findall(getattr(step, fld) or ""):
                if var not in declared:
                    problems.append(f"{_where(file, lines, (*base, 'steps', j, fld))}: variable {{{var}}} is not declared in the scenario's variables")
    for j, it in enumerate(sc.intents):
        for var in _VARIABLE.findall(it.answer or ""):
            if var not in declared:
                problems.append(f"{_where(file, lines, (*base, 'intents', j, 'answer'))}: variable {{{var}}} is not declared in the scenario's variables")
        seen: dict[str, int] = {}
        for k, q in enumerate(it.extension_questions):
            if q.text in seen:
                problems.append(f"{_where(file, lines, (*base, 'intents', j, 'extension_questions', k))}: duplicate extension question {q.text!r} in intent {it.name!r}")
            seen.setdefault(q.text, k)
    return problems


def validate_files(paths: Sequence[Path], existing: dict[str, set[str]]) -> ImportBatch:
    """Parse and check every file; raise ImportRejected listing every problem found.

    ``existing`` maps scenario codes already in the database to their intent names.
    """
    problems: list[str] = []
    scenarios: list[ScenarioDoc] = []
    rules, labels = [], []
    loose: list[tuple[str, IntentDoc, str]] = []
    for path in paths:
        file = str(path)
        try:
            data, lines, fmt = parse_file(path)
        except ImportRejected as exc:
            problems.extend(exc.problems)
            continue
        if fmt == "csv":
            intents, csv_problems = _csv_to_intents(file, data)  # type: ignore[arg-type]
            problems.extend(csv_problems)
            loose.extend(intents)
            continue
        assert isinstance(data, dict)
        if data.get("schema_version") != SCHEMA_VERSION:
            problems.append(f"{_where(file, lines, ('schema_version',))}: schema_version must be {SCHEMA_VERSION} (got {data.get('schema_version')!r})")
        try:
            doc = KnowledgeBaseDoc.model_validate(data)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(file, lines, exc))
            continue
        for i, sc in enumerate(doc.scenarios):
            problems.extend(_check_scenario(file, lines, i, sc, existing.get(sc.code, set())))
        for i, rule in enumerate(doc.compliance_rules):
            problems.extend(f"{_where(file, lines, ('compliance_rules', i, 'pattern'))}: {problem}" for problem in rule_problems(rule))
        scenarios.extend(doc.scenarios)
        rules.extend(doc.compliance_rules)
        labels.extend(doc.complaint_labels)

    for kind, keys in (("scenario", [s.code for s in scenarios]), ("compliance rule", [r.rule_id for r in rules]),
                       ("complaint label", [lb.code for lb in labels])):
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                problems.append(f"(all files): {kind} {key!r} is defined more than once")
            seen.add(key)
    label_codes = {lb.code for lb in labels}
    for lb in labels:
        if lb.parent and lb.parent not in label_codes:
            problems.append(f"(all files): complaint label {lb.code!r} has unknown parent {lb.parent!r}")
    known_scenarios = set(existing) | {s.code for s in scenarios}
    for scenario, _intent, origin in loose:
        if scenario not in known_scenarios:
            problems.append(f"{origin}: scenario {scenario!r} does not exist; create it first (YAML/JSON import) or fix the code")
    if problems:
        raise ImportRejected(problems)
    return ImportBatch(KnowledgeBaseDoc(schema_version=SCHEMA_VERSION, scenarios=scenarios,
                                        compliance_rules=rules, complaint_labels=labels), loose)


def _set(obj: Any, report: ImportReport, entity: str, created: bool, **values: Any) -> None:
    changed = False
    for key, value in values.items():
        if getattr(obj, key, None) != value:
            setattr(obj, key, value)
            changed = True
    if created:
        report.created[entity] += 1
    elif changed:
        report.updated[entity] += 1
    else:
        report.unchanged[entity] += 1


def _apply_intent(session: Session, scenario: Scenario, doc: IntentDoc, actor: str, report: ImportReport) -> None:
    existing = {it.name: it for it in scenario.intents}
    intent = existing.get(doc.name)
    created = intent is None
    if intent is None:
        intent = Intent(name=doc.name, scenario=scenario)
        session.add(intent)
    _set(intent, report, "intents", created, kind=doc.kind, category=doc.category,
         standard_question=doc.standard_question, answer=doc.answer)
    have = {q.text: q for q in intent.extension_questions}
    for q in doc.extension_questions:
        row = have.get(q.text)
        q_created = row is None
        if row is None:
            row = ExtensionQuestion(text=q.text, intent=intent, author=q.author or actor)
            session.add(row)
            have[q.text] = row
        _set(row, report, "extension_questions", q_created, source=q.source, status=q.status)


def apply_batch(session: Session, batch: ImportBatch, actor: str) -> ImportReport:
    """Upsert everything in ``batch`` into the open transaction."""
    report = ImportReport()
    scenarios = {
        s.code: s for s in session.scalars(
            select(Scenario).options(selectinload(Scenario.steps), selectinload(Scenario.intents).selectinload(Intent.extension_questions))
        )
    }
    for doc in batch.doc.scenarios:
        scenario = scenarios.get(doc.code)
        created = scenario is None
        if scenario is None:
            scenario = Scenario(code=doc.code)
            session.add(scenario)
            scenarios[doc.code] = scenario
        include_faq = doc.include_faq if doc.include_faq is not None else doc.kind == ScenarioKind.outbound
        _set(scenario, report, "scenarios", created, name=doc.name, kind=doc.kind, description=doc.description,
             language=doc.language, include_faq=include_faq, variables=list(doc.variables),
             deleted_at=None, deleted_by=None)  # importing a deleted scenario's code restores it
        steps = {s.code: s for s in scenario.steps}
        for pos, sd in enumerate(doc.steps):
            step = steps.get(sd.code)
            s_created = step is None
            if step is None:
                step = ScriptStep(code=sd.code, scenario=scenario)
                session.add(step)
            _set(step, report, "steps", s_created, position=pos, kind=sd.kind, prompt=sd.prompt, reprompt=sd.reprompt or "",
                 expected_intents=list(sd.expected_intents), transitions=dict(sd.transitions), terminal=sd.terminal,
                 outcome=sd.outcome.value if sd.outcome else None)
        for intent_doc in doc.intents:
            _apply_intent(session, scenario, intent_doc, actor, report)
    for scenario_code, intent_doc, _origin in batch.loose_intents:
        _apply_intent(session, scenarios[scenario_code], intent_doc, actor, report)

    rules = {r.rule_id: r for r in session.scalars(select(ComplianceRule))}
    for rd in batch.doc.compliance_rules:
        rule = rules.get(rd.rule_id)
        created = rule is None
        if rule is None:
            rule = ComplianceRule(rule_id=rd.rule_id)
            session.add(rule)
        _set(rule, report, "compliance_rules", created, **rd.model_dump(exclude={"rule_id"}))
    labels = {lb.code: lb for lb in session.scalars(select(ComplaintLabel))}
    for ld in batch.doc.complaint_labels:
        label = labels.get(ld.code)
        created = label is None
        if label is None:
            label = ComplaintLabel(code=ld.code)
            session.add(label)
        _set(label, report, "complaint_labels", created, name=ld.name, parent_code=ld.parent, description=ld.description)
    return report


def published_texts(batch: ImportBatch) -> list[tuple[str, str]]:
    """(where, text) of everything the batch would let the bot say: script prompts and reprompts, intents' answers."""
    out: list[tuple[str, str]] = []
    for sc in batch.doc.scenarios:
        for st in sc.steps:
            out += [(f"scenario {sc.code}, step {st.code}, {field}", text) for field, text in
                    (("prompt", st.prompt), ("reprompt", st.reprompt)) if text]
        out += [(f"scenario {sc.code}, intent {it.name}, answer", it.answer) for it in sc.intents if it.answer]
    out += [(f"scenario {code}, intent {it.name}, answer ({origin})", it.answer) for code, it, origin in batch.loose_intents if it.answer]
    return out


def existing_intents(session: Session) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for code, name in session.execute(select(Scenario.code, Intent.name).join(Intent, isouter=True).where(Scenario.live())):
        out[code]
        if name:
            out[code].add(name)
    return dict(out)
