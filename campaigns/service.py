"""Campaigns in the database: create, start/pause/resume/cancel, claim the next contacts, record each attempt, report.

Every state change is one transaction, so any process can die at any moment: a contact is ``calling`` only with an
attempt row naming the call, and a worker that restarts settles its unfinished attempts from the conversation
records (an outcome the call recorded is kept; a call with none is retried) before dialling anything new. On
PostgreSQL the claim is ``SELECT … FOR UPDATE SKIP LOCKED``: several dialer workers share one campaign and never
take the same contact.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, insert, select

from actions.time_expressions import parse_callback_time
from campaigns.customers import CustomerFileError, iter_customers, neutralise_formula
from knowledge_base.db import Store
from knowledge_base.errors import CallbotError
from knowledge_base.models import (
    CallAttempt,
    Campaign,
    CampaignContact,
    Conversation,
    ConversationTurn,
    DoNotCall,
    Scenario,
    utcnow,
)
from knowledge_base.service import scenario_deleted_note

# Outcomes after which the customer is called again (with back-off) while attempts remain.
RETRY_OUTCOMES = frozenset({"no_answer", "busy", "dropped", "answering_machine"})
# Numbers that cannot be reached at all: no retry.
UNREACHABLE = frozenset({"rejected"})
# Not reached: left out of the success rate's denominator (the seed's definition).
NOT_ANSWERED = frozenset({"no_answer", "busy", "rejected", "answering_machine", "wrong_person"})
SUCCESS = frozenset({"confirmed", "completed"})
INSERT_BATCH = 5000
LIFECYCLE = {"start": ({"draft"}, "running"), "pause": ({"running"}, "paused"), "resume": ({"paused"}, "running"),
             "cancel": ({"draft", "running", "paused"}, "cancelled")}


def parse_window(text: str) -> tuple[str, str]:
    found = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)", text.strip())
    if not found or text.strip()[:5] >= text.strip()[6:]:
        raise CallbotError(f"--window {text!r}: write HH:MM-HH:MM with the start before the end, e.g. 09:00-20:00.")
    return text.strip()[:5], text.strip()[6:]


def parse_weekdays(text: str) -> list[int]:
    days: set[int] = set()
    for part in text.split(","):
        bounds = part.strip().split("-")
        if not all(b.isdigit() and 1 <= int(b) <= 7 for b in bounds) or len(bounds) > 2:
            raise CallbotError(f"--weekdays {text!r}: ISO days 1 (Monday) to 7, e.g. 1-5 or 1-5,7.")
        days.update(range(int(bounds[0]), int(bounds[-1]) + 1))
    return sorted(days)


def parse_duration(text: str) -> int:
    found = re.fullmatch(r"(\d+)\s*([smhd]?)", text.strip())
    if not found:
        raise CallbotError(f"--retry-after {text!r}: a number with s, m, h or d, e.g. 2h or 30m.")
    return int(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[found.group(2)]


def in_window(campaign: Campaign, now: datetime) -> bool:
    """Whether ``now`` (UTC, naive) falls in the campaign's calling window, in its own time zone."""
    local = now.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(campaign.timezone))
    return local.isoweekday() in (campaign.weekdays or []) and campaign.window_start <= local.strftime("%H:%M") < campaign.window_end


@dataclass
class Claim:
    attempt_id: int
    contact_id: int
    campaign_id: int
    call_id: str
    scenario: str
    customer_name: str
    phone: str
    variables: dict[str, Any]


class Campaigns:
    def __init__(self, store: Store):
        self.store = store

    # -- staff actions --
    def create(self, scenario: str, customers_file: Path, name: str = "", window: str = "09:00-20:00",
               weekdays: str = "1-7", concurrency: int = 4, retries: int = 2, retry_after: str = "2h",
               timezone: str = "Asia/Shanghai", progress: Callable[[int], None] | None = None,
               actor: str = "campaigns") -> dict[str, Any]:
        """A draft campaign with every customer of the file, or an error naming every bad line and nothing written.
        ``progress`` gets the bytes of the file read so far."""
        start, end = parse_window(window)
        days, retry_s = parse_weekdays(weekdays), parse_duration(retry_after)
        if not 1 <= concurrency <= 1000:
            raise CallbotError(f"--concurrency {concurrency}: between 1 and 1000.")
        if not 0 <= retries <= 10:
            raise CallbotError(f"--retries {retries}: between 0 and 10.")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise CallbotError(f"--timezone {timezone!r}: not a time zone name (e.g. Asia/Shanghai).") from exc
        with self.store.session(actor) as s:
            sc = s.scalar(select(Scenario).where(Scenario.code == scenario, Scenario.live()))
            if sc is None:
                known = ", ".join(s.scalars(select(Scenario.code).where(Scenario.live())).all())
                raise CallbotError(f"Unknown scenario {scenario!r}; the knowledge base has: {known or 'none'}.")
            blocked = set(s.scalars(select(DoNotCall.phone)).all())
            campaign = Campaign(name=name or f"{sc.name} {utcnow():%Y-%m-%d %H:%M}", scenario_id=sc.id,
                                max_concurrent_calls=concurrency, window_start=start, window_end=end, weekdays=days,
                                timezone=timezone, max_attempts=retries + 1, retry_after_s=retry_s)
            s.add(campaign)
            s.flush()
            # Streamed in batches inside this one transaction: a file with a bad line anywhere raises below and the
            # transaction rolls back, so nothing is written; every bad line is still reported.
            problems: list[str] = []
            batch: list[dict[str, Any]] = []
            count = 0
            for c in iter_customers(customers_file, list(sc.variables or []), blocked, problems, progress):
                if problems:
                    continue  # keep reading for the report; nothing more is written
                batch.append({"campaign_id": campaign.id, "customer_name": c.name, "phone": c.phone,
                              "variables": c.variables, "source_line": c.line, "next_attempt_at": None})
                count += 1
                if len(batch) >= INSERT_BATCH:
                    s.execute(insert(CampaignContact), batch)
                    batch = []
            if problems:
                raise CustomerFileError(customers_file, problems)
            if batch:
                s.execute(insert(CampaignContact), batch)
            if count == 0:
                raise CallbotError(f"{customers_file}: no customers after the header line.")
            return {"id": campaign.id, "name": campaign.name, "contacts": count}

    def change(self, campaign_id: int, action: str, actor: str = "campaigns") -> str:
        allowed, target = LIFECYCLE[action]
        with self.store.session(actor) as s:
            campaign = s.get(Campaign, campaign_id)
            if campaign is None:
                raise CallbotError(f"No campaign {campaign_id}; `callbot campaign status` lists them.")
            if campaign.status not in allowed:
                why = f": {campaign.status_note}" if campaign.status == "stopped" and campaign.status_note else ""
                raise CallbotError(f"Campaign {campaign_id} is {campaign.status}{why}; it cannot {action} "
                                   f"(only when {' or '.join(sorted(allowed))}).")
            campaign.status = target
            return target

    def do_not_call(self, phone: str, reason: str = "", actor: str = "campaigns") -> None:
        with self.store.session(actor) as s:
            self._block(s, phone, reason)

    @staticmethod
    def _block(s: Any, phone: str, reason: str) -> None:
        """Put ``phone`` on the do-not-call list and skip it in every campaign still due to call it."""
        if s.scalar(select(DoNotCall).where(DoNotCall.phone == phone)) is None:
            s.add(DoNotCall(phone=phone, reason=reason[:200]))
        for contact in s.scalars(select(CampaignContact).where(CampaignContact.phone == phone,
                                                                CampaignContact.status == "pending")):
            contact.status, contact.last_outcome = "skipped", "do_not_call"

    # -- the dialer's side --
    def running(self) -> list[Campaign]:
        with self.store.session("campaigns") as s:
            campaigns = list(s.scalars(select(Campaign).where(Campaign.status == "running")))
            for c in campaigns:
                s.expunge(c)
            return campaigns

    def claim(self, campaign: Campaign, worker: str, driver: str, now: datetime, limit: int) -> list[Claim]:
        """Up to ``limit`` due contacts of ``campaign``, marked calling with an attempt each, in one transaction;
        never above the campaign's concurrency, counting every worker's calls."""
        claims: list[Claim] = []
        with self.store.session("campaigns") as s:
            scenario = s.get(Scenario, campaign.scenario_id)
            if scenario is None or scenario.deleted_at is not None:  # deleted since the dialer read the campaign
                c = s.get(Campaign, campaign.id)
                if c is not None and c.status == "running":
                    c.status, c.status_note = "stopped", scenario_deleted_note(scenario)
                return []
            postgres = s.bind is not None and s.bind.dialect.name == "postgresql"
            if postgres:  # one claimer per campaign at a time: the concurrency count below stays true
                s.get(Campaign, campaign.id, with_for_update=True)
            calling = s.scalar(select(func.count(CampaignContact.id)).where(
                CampaignContact.campaign_id == campaign.id, CampaignContact.status == "calling")) or 0
            room = min(limit, campaign.max_concurrent_calls - calling)
            if room <= 0:
                return []
            query = (select(CampaignContact)
                     .where(CampaignContact.campaign_id == campaign.id, CampaignContact.status == "pending",
                            (CampaignContact.next_attempt_at.is_(None)) | (CampaignContact.next_attempt_at <= now))
                     .order_by(CampaignContact.next_attempt_at.is_not(None), CampaignContact.next_attempt_at, CampaignContact.id)
                     .limit(room))
            if postgres:
                query = query.with_for_update(skip_locked=True)
            due = s.scalars(query).all()
            # Only the claimed numbers are looked up: the do-not-call list grows, the dialer asks every second.
            blocked = set(s.scalars(select(DoNotCall.phone).where(DoNotCall.phone.in_([c.phone for c in due])))) if due else set()
            for contact in due:
                if contact.phone in blocked:
                    contact.status, contact.last_outcome = "skipped", "do_not_call"
                    continue
                contact.status, contact.claimed_by = "calling", worker
                contact.attempts += 1
                call_id = f"camp{campaign.id}-c{contact.id}-a{contact.attempts}"
                attempt = CallAttempt(campaign_id=campaign.id, contact_id=contact.id, call_id=call_id, driver=driver, worker=worker)
                s.add(attempt)
                s.flush()
                # The call reads the caller's times ("两点", "明天上午") on the campaign's clock.
                variables = {"timezone": campaign.timezone, **(contact.variables or {})}
                claims.append(Claim(attempt.id, contact.id, campaign.id, call_id, scenario.code, contact.customer_name,
                                    contact.phone, variables))
        return claims

    def finish(self, attempt_id: int, outcome: str, now: datetime | None = None) -> str:
        """Record how an attempt ended and what happens to its contact: done, failed, or pending again (a retry after
        back-off, or a callback the customer asked for). Returns the contact's new status."""
        now = now or utcnow()
        with self.store.session("campaigns") as s:
            attempt = s.get(CallAttempt, attempt_id)
            if attempt is None:
                raise CallbotError(f"no call attempt {attempt_id}")
            contact = s.get(CampaignContact, attempt.contact_id)
            campaign = s.get(Campaign, attempt.campaign_id)
            assert contact is not None and campaign is not None
            if attempt.outcome is not None:
                return contact.status  # settled already (a restart found it done)
            attempt.outcome, attempt.ended_at = outcome, now
            contact.last_outcome, contact.claimed_by = outcome, None
            if outcome == "callback":
                when = self._callback_time(s, attempt.call_id, campaign, now)
                contact.status, contact.next_attempt_at = "pending", when
            elif outcome in RETRY_OUTCOMES and contact.attempts < campaign.max_attempts:
                contact.status = "pending"
                contact.next_attempt_at = now + timedelta(seconds=campaign.retry_after_s * contact.attempts)
            elif outcome in RETRY_OUTCOMES or outcome in UNREACHABLE:
                contact.status = "failed"
            else:
                contact.status = "done"
            if outcome == "do_not_call":  # the customer asked in the call: never dialled again, by any campaign
                self._block(s, contact.phone, f"asked in call {attempt.call_id}")
            left = s.scalar(select(func.count(CampaignContact.id)).where(
                CampaignContact.campaign_id == campaign.id, CampaignContact.status.in_(("pending", "calling")),
                CampaignContact.id != contact.id)) or 0
            if left == 0 and contact.status not in ("pending", "calling") and campaign.status == "running":
                campaign.status = "done"
            return contact.status

    @staticmethod
    def _callback_time(s: Any, call_id: str, campaign: Campaign, now: datetime) -> datetime:
        """When the customer asked to be called back (下周一上午), from the call's record, on the campaign's clock;
        the back-off when the words name no time that can be dated (the call asked twice)."""
        conv = s.scalar(select(Conversation).where(Conversation.external_id == call_id))
        said = str(((conv.outcome_detail or {}) if conv else {}).get("callback_time") or "")
        if said:
            zone = ZoneInfo(campaign.timezone)
            local_now = now.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None)
            when = parse_callback_time(said, local_now)
            if when is not None:
                return when.replace(tzinfo=zone).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
        return now + timedelta(seconds=campaign.retry_after_s)

    def unsettled(self, worker: str) -> list[tuple[int, str]]:
        """(attempt id, call id) of this worker's attempts with no outcome: what a restart must settle first."""
        with self.store.session("campaigns") as s:
            return [(a.id, a.call_id) for a in s.scalars(select(CallAttempt).where(
                CallAttempt.worker == worker, CallAttempt.outcome.is_(None)))]

    def recorded_outcome(self, call_id: str) -> str | None:
        return self.call_progress(call_id)[0]

    def call_progress(self, call_id: str) -> tuple[str | None, bool]:
        """(the outcome the conversation recorded or None, whether the customer has said anything yet)."""
        with self.store.session("campaigns") as s:
            conv = s.scalar(select(Conversation).where(Conversation.external_id == call_id))
            if conv is None:
                return None, False
            replied = s.scalar(select(ConversationTurn.id).where(ConversationTurn.conversation_id == conv.id,
                                                                 ConversationTurn.speaker == "user").limit(1)) is not None
            return (conv.outcome.value if conv.outcome is not None else None), replied

    # -- reports --
    def status(self, campaign_id: int | None = None) -> list[dict[str, Any]]:
        with self.store.session("campaigns") as s:
            query = select(Campaign).order_by(Campaign.id)
            if campaign_id is not None:
                query = query.where(Campaign.id == campaign_id)
            rows = []
            for c in s.scalars(query):
                counts = dict(s.execute(select(CampaignContact.status, func.count(CampaignContact.id))
                                        .where(CampaignContact.campaign_id == c.id).group_by(CampaignContact.status)).all())
                rows.append({"id": c.id, "name": c.name, "status": c.status, "note": c.status_note,
                             "window": f"{c.window_start}-{c.window_end} {c.timezone}", "concurrency": c.max_concurrent_calls,
                             "contacts": counts})
            if campaign_id is not None and not rows:
                raise CallbotError(f"No campaign {campaign_id}; `callbot campaign status` lists them.")
            return rows

    def report(self, campaign_id: int) -> dict[str, Any]:
        """Counts by final outcome, the success rate (completed over answered), average handling time, callbacks due."""
        self.status(campaign_id)
        with self.store.session("campaigns") as s:
            contacts = list(s.scalars(select(CampaignContact).where(CampaignContact.campaign_id == campaign_id)))
            attempts = list(s.scalars(select(CallAttempt).where(CallAttempt.campaign_id == campaign_id)))
            by_outcome: dict[str, int] = {}
            for c in contacts:
                key = c.last_outcome or c.status
                by_outcome[key] = by_outcome.get(key, 0) + 1
            answered = [c for c in contacts if c.last_outcome and c.last_outcome not in NOT_ANSWERED | {"dropped", "no_answer"}]
            success = [c for c in answered if c.last_outcome in SUCCESS]
            handled = [(a.ended_at - a.started_at).total_seconds() for a in attempts
                       if a.ended_at and a.outcome and a.outcome not in NOT_ANSWERED]
            callbacks = sum(1 for c in contacts if c.status == "pending" and c.last_outcome == "callback")
            return {"campaign": campaign_id, "contacts": len(contacts), "attempts": len(attempts), "by_outcome": by_outcome,
                    "answered": len(answered), "success": len(success),
                    "success_rate": round(len(success) / len(answered), 4) if answered else None,
                    "average_handling_s": round(sum(handled) / len(handled), 1) if handled else None,
                    "callbacks_due": callbacks}

    def attempts(self, campaign_id: int) -> list[tuple[datetime, str | None]]:
        """(start, outcome or None while in flight) of every attempt, oldest first: the chart's timeline."""
        self.status(campaign_id)
        with self.store.session("campaigns") as s:
            return [(a.started_at, a.outcome) for a in s.scalars(
                select(CallAttempt).where(CallAttempt.campaign_id == campaign_id).order_by(CallAttempt.started_at))]

    def export_csv(self, campaign_id: int) -> str:
        """One line per contact: masked phone, status, attempts, last outcome (formula-looking cells neutralised)."""
        self.status(campaign_id)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["line", "name", "phone", "status", "attempts", "last_outcome"])
        with self.store.session("campaigns") as s:
            for c in s.scalars(select(CampaignContact).where(CampaignContact.campaign_id == campaign_id).order_by(CampaignContact.id)):
                writer.writerow([c.source_line, neutralise_formula(c.customer_name), f"{c.phone[:3]}****{c.phone[-4:]}",
                                 c.status, c.attempts, c.last_outcome or ""])
        return out.getvalue()
