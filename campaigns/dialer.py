"""The dialer: places the running campaigns' calls within their windows and concurrency caps, and records how
each ended. State lives in the database (campaigns.service); this loop holds only the calls it has in flight,
and on start it first settles what a previous run of the same worker left unfinished.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime
from typing import Any

from campaigns.drivers import CallDriver
from campaigns.service import Campaigns, Claim, in_window
from knowledge_base.errors import CallbotError
from knowledge_base.models import utcnow

log = logging.getLogger(__name__)


class Dialer:
    def __init__(self, campaigns: Campaigns, driver: CallDriver, worker: str, poll_s: float = 1.0):
        self.campaigns, self.driver, self.worker, self.poll_s = campaigns, driver, worker, poll_s
        self.in_flight: dict[int, Claim] = {}  # attempt id → claim
        self.stopping = threading.Event()

    def recover(self, now: datetime | None = None) -> int:
        """Settle this worker's attempts that a crash left without an outcome: the conversation's recorded outcome if
        the call got that far, else ``dropped`` (retried while attempts remain, counted from ``now``). Returns how many."""
        settled = 0
        for attempt_id, call_id in self.campaigns.unsettled(self.worker):
            outcome = self.campaigns.recorded_outcome(call_id) or "dropped"
            self.campaigns.finish(attempt_id, outcome, now or utcnow())
            log.info("settled an attempt left by a previous run", extra={"fields": {"call": call_id, "outcome": outcome}})
            settled += 1
        return settled

    def tick(self, now: datetime | None = None) -> None:
        now = now or utcnow()
        for attempt_id, claim in list(self.in_flight.items()):
            outcome = self.driver.outcome(claim)
            if outcome is not None:
                status = self.campaigns.finish(attempt_id, outcome, now)
                del self.in_flight[attempt_id]
                log.info("call ended", extra={"fields": {"call": claim.call_id, "outcome": outcome, "contact": status}})
        for campaign in self.campaigns.running():
            if not in_window(campaign, now):
                continue
            for claim in self.campaigns.claim(campaign, self.worker, self.driver.name, now, limit=campaign.max_concurrent_calls):
                try:
                    self.driver.place(claim)
                except CallbotError as exc:
                    log.error("could not place a call", extra={"fields": {"call": claim.call_id, "error": str(exc)[:200]}})
                    self.campaigns.finish(claim.attempt_id, "dropped", now)
                    continue
                self.in_flight[claim.attempt_id] = claim
                log.info("call placed", extra={"fields": {"call": claim.call_id, "campaign": claim.campaign_id}})

    def run(self, until_idle: bool = False) -> None:
        """Dial until stopped (SIGTERM/SIGINT), or with ``until_idle`` until no campaign runs and nothing is in flight."""
        self.recover()
        while not self.stopping.is_set():
            self.tick()
            if until_idle and not self.in_flight and not self.campaigns.running():
                return
            self.stopping.wait(self.poll_s)


def run_dialer(driver_name: str, worker: str, until_idle: bool = False, **options: Any) -> None:
    from callbot.context import get_store
    from callbot.settings import get_settings
    from campaigns.drivers import GatewayDriver, TextDriver

    settings = get_settings()
    campaigns = Campaigns(get_store())
    if driver_name == "gateway":
        driver: CallDriver = GatewayDriver(settings.url("gateway"), options.get("trunk") or settings.campaigns.sip_trunk, campaigns,
                                           settings.campaigns.gateway_lost_after_s)
    elif driver_name == "text":
        driver = TextDriver(settings.url("rasa"), campaigns, float(options.get("answer_timeout_s") or settings.campaigns.text_answer_timeout_s),
                            settings.campaigns.text_abandoned_after_s)
    else:
        raise CallbotError(f"--driver {driver_name!r}: gateway (phone calls) or text (conversations only).")
    dialer = Dialer(campaigns, driver, worker, settings.campaigns.poll_s)

    def stop(*_: Any) -> None:
        dialer.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    dialer.run(until_idle)


def main() -> None:
    """`python -m campaigns.dialer [--driver gateway|text]`: the dialer as `callbot up` runs it."""
    import argparse
    import socket

    from callbot.logs import setup_logging
    from callbot.settings import get_settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--driver", default="gateway", choices=("gateway", "text"))
    parser.add_argument("--worker", default=f"{socket.gethostname()}-dialer")
    args = parser.parse_args()
    setup_logging(get_settings().log_level)
    try:
        run_dialer(args.driver, args.worker)
    except CallbotError as exc:
        log.error(str(exc))
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
