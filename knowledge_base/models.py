"""SQLAlchemy 2 models of the knowledge base and the records kept around it."""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _enum(cls: type[enum.Enum]) -> Enum:
    # Store the value strings; portable across SQLite and PostgreSQL without native enum types.
    return Enum(cls, values_callable=lambda e: [m.value for m in e], native_enum=False, length=32)


class ScenarioKind(enum.StrEnum):
    outbound = "outbound"
    inbound = "inbound"


class IntentKind(enum.StrEnum):
    dialogue = "dialogue"
    faq = "faq"


class QuestionSource(enum.StrEnum):
    manual = "manual"
    generated = "generated"
    mined = "mined"


class ReviewStatus(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class StepKind(enum.StrEnum):
    opening = "opening"
    identity_check = "identity_check"
    notice = "notice"
    confirm = "confirm"
    disclosure = "disclosure"
    handling = "handling"
    closing = "closing"


class Severity(enum.StrEnum):
    block = "block"
    warn = "warn"


class MatchType(enum.StrEnum):
    literal = "literal"
    regex = "regex"
    # Not a pattern: the pattern names a class of the compliance classifier (nlu/compliance/classifier.py), and the
    # rule gives that class its severity and legal basis.
    semantic = "semantic"


# The compliance classifier's violation classes (the pattern of a semantic rule names one).
COMPLIANCE_CLASSES = ("guarantee", "no_risk", "promised_return", "inside_info", "false_urgency", "disparage", "cover_loss",
                      "deposit_analogy", "misconduct", "exaggeration")


class Outcome(enum.StrEnum):
    completed = "completed"
    confirmed = "confirmed"
    refused = "refused"
    callback = "callback"
    wrong_person = "wrong_person"
    handed_over = "handed_over"
    complained = "complained"
    dropped = "dropped"
    # The customer says they did not do what the call is about (业务办理回访: 不是我办的): a case for staff,
    # opened as a follow-up that someone must close, and counted on its own in reports.
    disputed = "disputed"
    # Outbound calls that never reached the customer (the voice gateway records these).
    no_answer = "no_answer"
    busy = "busy"
    rejected = "rejected"
    answering_machine = "answering_machine"
    # The customer asked not to be called again (the stop_calling intent): the number goes on the do-not-call list.
    do_not_call = "do_not_call"


# Outcomes that open a staff follow-up (Conversation.follow_up) when a call ends with them.
FOLLOW_UP_OUTCOMES = frozenset({Outcome.disputed})


class Role(enum.StrEnum):
    admin = "admin"
    editor = "editor"
    reviewer = "reviewer"
    agent = "agent"  # the live agent desk: takes over handed-over chats
    viewer = "viewer"


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Scenario(Timestamped, Base):
    """An outbound call scene (新股中签缴款通知 …) or the inbound FAQ domain."""

    __tablename__ = "scenario"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[ScenarioKind] = mapped_column(_enum(ScenarioKind))
    description: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str] = mapped_column(String(8), default="zh")
    include_faq: Mapped[bool] = mapped_column(Boolean, default=True)
    variables: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Deleting a scenario keeps its row, script and intents: recorded calls and campaigns refer to them and a
    # regulator may ask what a call said. A deleted scenario is no longer matched, called, listed or exported;
    # importing its code again restores it.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    deleted_by: Mapped[str | None] = mapped_column(String(64), nullable=True)

    @classmethod
    def live(cls) -> Any:
        """The WHERE clause of scenarios that are not deleted."""
        return cls.deleted_at.is_(None)

    steps: Mapped[list[ScriptStep]] = relationship(
        back_populates="scenario", cascade="all, delete-orphan", order_by="ScriptStep.position"
    )
    intents: Mapped[list[Intent]] = relationship(
        back_populates="scenario", cascade="all, delete-orphan", order_by="Intent.id"
    )


class ScriptStep(Timestamped, Base):
    """One step of a call script (话术): what the bot says and where each answer leads."""

    __tablename__ = "script_step"
    __table_args__ = (UniqueConstraint("scenario_id", "code"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenario.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[StepKind] = mapped_column(_enum(StepKind), default=StepKind.handling)
    prompt: Mapped[str] = mapped_column(Text)
    reprompt: Mapped[str] = mapped_column(Text, default="")
    expected_intents: Mapped[list[str]] = mapped_column(JSON, default=list)
    transitions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    terminal: Mapped[bool] = mapped_column(Boolean, default=False)
    # What a call that ends here is recorded as (required on terminal steps). On a non-terminal step it marks
    # the path: a call that passes through it is recorded so whichever step ends it (a dispute handed over).
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)

    scenario: Mapped[Scenario] = relationship(back_populates="steps")


class Intent(Timestamped, Base):
    """A dialogue intent (affirm, busy …) or an FAQ, scoped to one scenario."""

    __tablename__ = "intent"
    __table_args__ = (UniqueConstraint("scenario_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenario.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[IntentKind] = mapped_column(_enum(IntentKind))
    category: Mapped[str] = mapped_column(String(64), default="")
    standard_question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)

    scenario: Mapped[Scenario] = relationship(back_populates="intents")
    extension_questions: Mapped[list[ExtensionQuestion]] = relationship(
        back_populates="intent", cascade="all, delete-orphan", order_by="ExtensionQuestion.id"
    )


class ExtensionQuestion(Timestamped, Base):
    """A paraphrase (扩展问) attached to an intent, with its provenance and review state."""

    __tablename__ = "extension_question"
    __table_args__ = (UniqueConstraint("intent_id", "text"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int] = mapped_column(ForeignKey("intent.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(String(200))
    source: Mapped[QuestionSource] = mapped_column(_enum(QuestionSource), default=QuestionSource.manual)
    status: Mapped[ReviewStatus] = mapped_column(_enum(ReviewStatus), default=ReviewStatus.approved)
    author: Mapped[str] = mapped_column(String(64), default="system")
    reviewed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    intent: Mapped[Intent] = relationship(back_populates="extension_questions")


class ComplianceRule(Timestamped, Base):
    """Prohibited wording the bot must never say (保本保收益, 零风险 …)."""

    __tablename__ = "compliance_rule"
    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(32), unique=True)
    pattern: Mapped[str] = mapped_column(Text)
    match_type: Mapped[MatchType] = mapped_column(_enum(MatchType), default=MatchType.literal)
    severity: Mapped[Severity] = mapped_column(_enum(Severity), default=Severity.block)
    legal_basis: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    suggestion: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    def compiled(self) -> re.Pattern[str]:
        """The rule as a regular expression (a literal is escaped); raises re.error for a regex that does not compile.
        One place for the lexicon's scan and the console's "where does it hit" list."""
        return re.compile(self.pattern if self.match_type == MatchType.regex else re.escape(self.pattern))


class ComplaintLabel(Timestamped, Base):
    """A node of the complaint taxonomy (two levels: category → label)."""

    __tablename__ = "complaint_label"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")


class KnowledgeBaseState(Base):
    """Single row holding the knowledge-base version; bumped on every committed KB edit."""

    __tablename__ = "kb_state"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class StaffUser(Timestamped, Base):
    __tablename__ = "staff_user"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.viewer)
    password_hash: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class StaffSession(Base):
    """A signed-in browser or an API token. Only the token's SHA-256 is stored: a copy of the database
    does not let anyone sign in. Browser sessions carry a CSRF token; API tokens (Bearer) need none."""

    __tablename__ = "staff_session"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8), default="browser")  # browser | api
    csrf_token: Mapped[str] = mapped_column(String(64), default="")
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    user: Mapped[StaffUser] = relationship()


class LoginAttempt(Base):
    """Failed sign-ins, for rate limiting across web workers (kept in the database, not in one process)."""

    __tablename__ = "login_attempt"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    client: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class IdempotentRequest(Base):
    """A staff write sent with an ``Idempotency-Key`` header, and the answer it got: a resend of the same request
    (a double click, a retry after a 502 when a web worker died) gets the stored answer instead of running twice.
    ``owner`` is the worker running it while ``response_status`` is empty (host:pid:start time), so a resend can tell
    a request still running from one whose worker died."""

    __tablename__ = "idempotent_request"
    __table_args__ = (UniqueConstraint("principal", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    principal: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128))
    request_sha256: Mapped[str] = mapped_column(String(64))  # method, path, query and body
    owner: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_type: Mapped[str] = mapped_column(String(128), default="")
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class HandOverStatus(enum.StrEnum):
    waiting = "waiting"
    active = "active"
    closed = "closed"


class HandOver(Base):
    """A chat the bot handed to a person: queued (waiting), picked by an agent (active), closed with an outcome."""

    __tablename__ = "hand_over"
    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), index=True)  # the widget's session id = Rasa sender id
    channel: Mapped[str] = mapped_column(String(16), default="chat")
    status: Mapped[HandOverStatus] = mapped_column(_enum(HandOverStatus), default=HandOverStatus.waiting, index=True)
    reason: Mapped[str] = mapped_column(String(64), default="")
    requested_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    picked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    agent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")


class AuditEntry(Base):
    """One knowledge-base change: who, what, before/after."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))  # create | update | delete
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    kb_version: Mapped[int] = mapped_column(Integer)


class Campaign(Timestamped, Base):
    """An outbound calling campaign: one scenario, many contacts, a calling window and a retry policy."""

    __tablename__ = "campaign"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenario.id"))
    # draft | running | paused | cancelled | done | stopped (its scenario is gone)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    status_note: Mapped[str] = mapped_column(Text, default="")
    max_concurrent_calls: Mapped[int] = mapped_column(Integer, default=4)
    window_start: Mapped[str] = mapped_column(String(5), default="09:00")  # in the campaign's time zone
    window_end: Mapped[str] = mapped_column(String(5), default="20:00")
    weekdays: Mapped[list[int]] = mapped_column(JSON, default=lambda: [1, 2, 3, 4, 5, 6, 7])  # ISO: 1 = Monday
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)  # first call + retries
    retry_after_s: Mapped[int] = mapped_column(Integer, default=7200)  # back-off: × the attempt number
    contacts: Mapped[list[CampaignContact]] = relationship(back_populates="campaign", cascade="all, delete-orphan")


class CampaignContact(Timestamped, Base):
    __tablename__ = "campaign_contact"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    customer_name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str] = mapped_column(String(32))  # stored in full to dial; masked in logs and exports
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # pending | calling | done (a final outcome) | failed (out of attempts, or an unusable number) | skipped (do not call)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    last_outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the dialer worker holding the call
    source_line: Mapped[int] = mapped_column(Integer, default=0)  # its line in the imported CSV
    campaign: Mapped[Campaign] = relationship(back_populates="contacts")


class CallAttempt(Base):
    """One dial of one contact: when, through which call, and how it ended."""

    __tablename__ = "call_attempt"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("campaign_contact.id", ondelete="CASCADE"), index=True)
    call_id: Mapped[str] = mapped_column(String(128), index=True)  # the conversation's external id
    driver: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)


class DoNotCall(Base):
    """Numbers never to be dialled (a customer's request, a regulator's list)."""

    __tablename__ = "do_not_call"
    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), unique=True)
    reason: Mapped[str] = mapped_column(String(200), default="")
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Conversation(Base):
    """A call or chat, with its outcome; turns hold the transcript."""

    __tablename__ = "conversation"
    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)  # Rasa sender id
    channel: Mapped[str] = mapped_column(String(16))  # voice | chat | outbound
    scenario_id: Mapped[int | None] = mapped_column(ForeignKey("scenario.id"), nullable=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_contact.id"), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    outcome: Mapped[Outcome | None] = mapped_column(_enum(Outcome), nullable=True)
    outcome_detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    complaint_labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    handed_over: Mapped[bool] = mapped_column(Boolean, default=False)
    # A voice call's stereo WAV (caller left, bot right), relative to the recordings folder; never committed.
    recording: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Staff follow-up (a disputed business): open | closed, or None when the outcome needs none.
    follow_up: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    follow_up_note: Mapped[str] = mapped_column(Text, default="")
    follow_up_closed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    follow_up_closed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    turns: Mapped[list[ConversationTurn]] = relationship(
        back_populates="conversation", cascade="all, delete-orphan", order_by="ConversationTurn.seq"
    )


class ConversationTurn(Base):
    __tablename__ = "conversation_turn"
    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    speaker: Mapped[str] = mapped_column(String(8))  # user | bot | event (a channel payload: /greet, /silence)
    text: Mapped[str] = mapped_column(Text)
    intent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    matched_question: Mapped[str | None] = mapped_column(Text, nullable=True)
    ranking: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    conversation: Mapped[Conversation] = relationship(back_populates="turns")


# Entities whose edits change what the bot knows: they bump the KB version and are audited.
KB_ENTITIES: tuple[type[Base], ...] = (Scenario, ScriptStep, Intent, ExtensionQuestion, ComplianceRule, ComplaintLabel)
AUDITED_ENTITIES: tuple[type[Base], ...] = (*KB_ENTITIES, StaffUser, Campaign, HandOver)
