"""The knowledge-base document (docs/kb-schema.md) as pydantic models: structure and field rules."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from knowledge_base.models import IntentKind, MatchType, Outcome, QuestionSource, ReviewStatus, ScenarioKind, Severity, StepKind

SCHEMA_VERSION = 1
CODE_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"
BUILTIN_INTENTS = frozenset({"nlu_fallback", "faq"})
END = "end"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if _CONTROL.search(value):
        raise ValueError("contains control characters; remove them")
    return value


Text = Annotated[str, AfterValidator(_clean), Field(max_length=2000)]
Code = Annotated[str, Field(pattern=CODE_PATTERN)]
QuestionText = Annotated[str, AfterValidator(_clean), Field(max_length=200)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


def _question_from_str(value: Any) -> Any:
    return {"text": value} if isinstance(value, str) else value


class ExtensionQuestionDoc(_Model):
    text: QuestionText
    source: QuestionSource = QuestionSource.manual
    status: ReviewStatus = ReviewStatus.approved
    author: str | None = None


class IntentDoc(_Model):
    name: Code
    kind: IntentKind = IntentKind.dialogue
    category: str = ""
    standard_question: Text
    answer: Text | None = None
    extension_questions: list[Annotated[ExtensionQuestionDoc, BeforeValidator(_question_from_str)]] = []


class StepDoc(_Model):
    code: Code
    kind: StepKind = StepKind.handling
    prompt: Text
    reprompt: Text | None = None
    expected_intents: list[Code] = []
    transitions: dict[str, str] = {}
    terminal: bool = False
    # Required on a terminal step (checked on import with the file and line); on another step it marks the path.
    outcome: Outcome | None = None


class ScenarioDoc(_Model):
    code: Code
    name: Text
    kind: ScenarioKind
    description: str = ""
    language: str = Field(default="zh", pattern=r"^(zh|en)$")
    include_faq: bool | None = None
    variables: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]] = []
    steps: list[StepDoc] = []
    intents: list[IntentDoc] = []


class ComplianceRuleDoc(_Model):
    rule_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    pattern: Text
    match_type: MatchType = MatchType.literal
    severity: Severity = Severity.block
    legal_basis: str = ""
    description: str = ""
    suggestion: str = ""
    enabled: bool = True


class ComplaintLabelDoc(_Model):
    code: Code
    name: Text
    parent: Code | None = None
    description: str = ""


class KnowledgeBaseDoc(_Model):
    schema_version: int
    scenarios: list[ScenarioDoc] = []
    compliance_rules: list[ComplianceRuleDoc] = []
    complaint_labels: list[ComplaintLabelDoc] = []
