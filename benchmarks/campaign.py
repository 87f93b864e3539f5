"""A campaign through the dialer's text driver: 150 contacts at once, customers answering in their own words.

`python -m benchmarks campaign` starts the product (default profile: SQLite, one process of each), loads a campaign
of ``CALLBOT_BENCH_CONTACTS`` IPO-notice contacts (default 150) with the concurrency cap at the same number, runs
`callbot campaign dial --driver text` and plays every customer through the REST channel under the call's id, as a
chat or SMS bridge would. Customers come in four kinds, one contact in ten each for the last three:

- confirm: identifies, takes the notice, agrees (→ ``confirmed``);
- callback: is busy and names a time (→ ``callback``, a scheduled attempt);
- person: asks for a human (→ ``handed_over``);
- silent: never answers (→ ``no_answer`` after ``CALLBOT_BENCH_ANSWER_TIMEOUT_S``, default 20 s).

Customers wait ``CALLBOT_BENCH_THINK_S`` (default 1 s) after each bot reply and learn that a call started or
ended from the product's database, as the load test counts what was recorded. Reported: how fast the dialer places
the calls (first and last placement after `campaign start`), customer turn
p50/p95, the time until every answered call has its outcome, CPU seconds per turn, the campaign report (success
rate as the seed defines it), and how many contacts ended with the outcome their kind should give. Baseline, same
run and same product: the same answered conversations started by the benchmark itself, all at once, without the
dialer. Ratio = dialer time / direct time (what placing calls one by one and polling for outcomes costs).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import ROOT, percentiles, save
from benchmarks.load import IPO_VARS, SAFE_REPLY, drive, product_cpu_seconds, running
from callbot.turns import send_turn_async

# Spoken replies written for this benchmark (never copied into the KB); a confirmer says "好的" until the call ends.
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "confirm": (("嗯是我", "好的我知道了", "行，到时候我会把钱存进去", "好的"), "confirmed"),
    "callback": (("是我，不过我这会儿在外面办事，晚点再打吧", "明天上午十点吧"), "callback"),
    "person": (("是我", "你帮我转个人工吧"), "handed_over"),
    "silent": ((), "no_answer"),
}
MAX_TURNS = 8
POLL_S = 0.5
THINK_S = float(os.environ.get("CALLBOT_BENCH_THINK_S", "1"))  # between a bot line and the reply


def kind_of(index: int) -> str:
    return {1: "callback", 2: "person", 3: "silent"}.get(index % 10, "confirm")


def phone_of(index: int) -> str:
    return f"139{index:08d}"


@dataclass
class Customers:
    turn_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done_at: dict[str, float] = field(default_factory=dict)  # call id → when its last reply came back
    # call id → (the opening line is recorded, the call has ended), from the product's database: customers watch it
    # there instead of polling Rasa's tracker, which would cost Rasa more than the conversations do
    state: dict[str, tuple[bool, bool]] = field(default_factory=dict)


@lru_cache(maxsize=4)
def engine_for(db_url: str) -> Any:
    """One engine per database for the benchmark's polling (every half second), not one per poll."""
    from sqlalchemy import create_engine

    return create_engine(db_url)


def conversation_states(db_url: str, prefix: str) -> dict[str, tuple[bool, bool]]:
    from sqlalchemy import text

    with engine_for(db_url).connect() as conn:
        rows = conn.execute(text("SELECT c.external_id, c.ended_at IS NOT NULL, EXISTS (SELECT 1 FROM conversation_turn t "
                                 "WHERE t.conversation_id = c.id AND t.speaker = 'bot') FROM conversation c "
                                 "WHERE c.external_id LIKE :p"), {"p": f"{prefix}%"}).all()
    return {r[0]: (bool(r[2]), bool(r[1])) for r in rows}


async def watch(db_url: str, prefix: str, out: Customers, stop: asyncio.Event) -> None:
    while not stop.is_set():
        out.state.update(await asyncio.to_thread(conversation_states, db_url, prefix))
        await asyncio.sleep(POLL_S)


async def play(client: httpx.AsyncClient, rasa: str, call_id: str, kind: str, out: Customers) -> None:
    """One customer: wait until the call's opening line is recorded, then answer in kind, a pause between turns."""
    replies = KINDS[kind][0]
    if not replies:
        return
    deadline = time.monotonic() + 300
    while not out.state.get(call_id, (False, False))[0]:
        if time.monotonic() > deadline:
            out.errors.append(f"{call_id}: never started")
            return
        await asyncio.sleep(POLL_S)
    said = list(replies) + [replies[-1]] * (MAX_TURNS - len(replies)) if kind == "confirm" else list(replies)
    for text in said:
        t = time.perf_counter()
        r = await send_turn_async(client, f"{rasa}/webhooks/rest/webhook", {"sender": call_id, "message": text})
        out.turn_ms.append((time.perf_counter() - t) * 1000)
        texts = [m.get("text", "") for m in r.json()] if r.status_code == 200 else []
        if r.status_code != 200 or any(SAFE_REPLY in x for x in texts):
            out.errors.append(f"{call_id}: HTTP {r.status_code} {texts[:1]}"[:200])
            return
        await asyncio.sleep(THINK_S)  # the customer listens and thinks; the watcher sees an ended call meanwhile
        if out.state.get(call_id, (True, False))[1]:
            break
    out.done_at[call_id] = time.perf_counter()


def attempts(db_url: str, campaign_id: int) -> list[tuple[str, str, Any, str | None]]:
    """(call id, phone, started_at, outcome) of every attempt of the campaign."""
    from sqlalchemy import text

    with engine_for(db_url).connect() as conn:
        rows = conn.execute(text("SELECT a.call_id, c.phone, a.started_at, a.outcome FROM call_attempt a "
                                 "JOIN campaign_contact c ON c.id = a.contact_id WHERE a.campaign_id = :c ORDER BY a.id"),
                            {"c": campaign_id}).all()
    return [tuple(r) for r in rows]


async def customers_of(product: dict[str, Any], campaign_id: int, contacts: int, out: Customers) -> None:
    """Answer every call the dialer places until each contact has had its first attempt."""
    kinds = {phone_of(i): kind_of(i) for i in range(contacts)}
    seen: set[str] = set()
    tasks = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(product["db_url"], f"camp{campaign_id}-", out, stop))
    limits = httpx.Limits(max_connections=contacts + 20, max_keepalive_connections=contacts + 20)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        deadline = time.monotonic() + 1800
        while len(seen) < contacts and time.monotonic() < deadline:
            for call_id, phone, _started, _outcome in await asyncio.to_thread(attempts, product["db_url"], campaign_id):
                if call_id not in seen:
                    seen.add(call_id)
                    tasks.append(asyncio.create_task(play(client, product["rasa"], call_id, kinds[phone], out)))
            await asyncio.sleep(POLL_S)
        await asyncio.gather(*tasks)
    stop.set()
    await watcher


async def direct(product: dict[str, Any], contacts: int, prefix: str) -> tuple[Customers, float]:
    """The baseline: the answered customers' calls started by the benchmark itself, all at once."""
    out = Customers()
    rasa = product["rasa"]
    body = {"name": "EXTERNAL_start_call", "entities": {"scenario": "ipo_allotment_notice", "customer_name": "张先生",
                                                        "variables": IPO_VARS}}
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(product["db_url"], f"{prefix}-", out, stop))
    limits = httpx.Limits(max_connections=contacts + 20, max_keepalive_connections=contacts + 20)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        async def one(i: int) -> None:
            call_id = f"{prefix}-{i}"
            r = await client.post(f"{rasa}/conversations/{call_id}/trigger_intent?output_channel=latest", json=body)
            if r.status_code != 200:
                out.errors.append(f"{call_id}: start HTTP {r.status_code}")
                return
            await play(client, rasa, call_id, kind_of(i), out)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(contacts) if kind_of(i) != "silent"))
        wall = time.perf_counter() - start
    stop.set()
    await watcher
    return out, wall


def conversations_started(db_url: str, campaign_id: int) -> list[Any]:
    """When each of the campaign's conversations began (Rasa ran the call's first action): the dialer claims a batch
    of contacts at once but starts their calls one request after another."""
    from sqlalchemy import text

    with engine_for(db_url).connect() as conn:
        rows = conn.execute(text("SELECT started_at FROM conversation WHERE external_id LIKE :p ORDER BY started_at"),
                            {"p": f"camp{campaign_id}-%"}).all()
    return [r[0] for r in rows]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (the dialer: not among the product's pid files)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def placed_at(started: Any) -> float:
    """An attempt's start (stored naive UTC; SQLite hands it back as text) as a Unix time."""
    if isinstance(started, str):
        started = datetime.fromisoformat(started)
    return started.replace(tzinfo=UTC).timestamp()


def customers_csv(path: Path, contacts: int) -> None:
    columns = ["name", "phone", *IPO_VARS]
    lines = [",".join(columns)] + [",".join(["张先生", phone_of(i), *(str(v) for v in IPO_VARS.values())]) for i in range(contacts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(console: Any) -> None:
    contacts = int(os.environ.get("CALLBOT_BENCH_CONTACTS", "150"))
    answer_timeout = float(os.environ.get("CALLBOT_BENCH_ANSWER_TIMEOUT_S", "20"))
    callbot = str(Path(sys.executable).parent / "callbot")
    with running("default", 1) as product:
        env = {**product["env"], "CALLBOT_CAMPAIGNS__TEXT_ANSWER_TIMEOUT_S": str(answer_timeout)}
        asyncio.run(drive(product["rasa"], 4, "warm-campaign"))
        base, base_s = asyncio.run(direct(product, contacts, "direct"))
        console.print(f"direct (no dialer): {contacts - contacts // 10} answered calls in {base_s:.1f} s, "
                      f"turn p50 {percentiles(base.turn_ms)['p50']:.0f} ms, errors {len(base.errors)}")
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "customers.csv"
            customers_csv(csv, contacts)
            made = subprocess.run([callbot, "campaign", "create", "--scenario", "ipo_allotment_notice", "--customers", str(csv),
                                   "--name", "bench", "--concurrency", str(contacts), "--window", "00:00-24:00",
                                   "--retries", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            if made.returncode != 0:
                raise RuntimeError(made.stderr + made.stdout)
        campaign_id = int(made.stdout.split("campaign ")[1].split(" ")[0])
        cpu0 = product_cpu_seconds(product["home"])
        subprocess.run([callbot, "campaign", "start", str(campaign_id)], cwd=ROOT, env=env, check=True, capture_output=True)
        started = time.perf_counter()
        wall_start = time.time()
        dialer = subprocess.Popen([callbot, "campaign", "dial", "--driver", "text", "--worker", "bench-dialer"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        out = Customers()
        try:
            asyncio.run(customers_of(product, campaign_id, contacts, out))
            answered_s = max(out.done_at.values(), default=started) - started
            deadline = time.monotonic() + answer_timeout + 120
            while time.monotonic() < deadline:  # the silent ones settle as no_answer after the answer timeout
                rows = attempts(product["db_url"], campaign_id)
                if len(rows) >= contacts and all(r[3] for r in rows):
                    break
                time.sleep(1)
            settled_s = time.perf_counter() - started
        finally:
            dialer_cpu = process_cpu_seconds(dialer.pid)
            os.killpg(dialer.pid, signal.SIGTERM)
            dialer.wait(timeout=60)
        cpu = product_cpu_seconds(product["home"]) - cpu0
        rows = attempts(product["db_url"], campaign_id)
        began = [placed_at(t) - wall_start for t in conversations_started(product["db_url"], campaign_id)]
        report = subprocess.run([callbot, "campaign", "report", str(campaign_id)], cwd=ROOT, env=env, capture_output=True, text=True)
    placed = sorted(placed_at(r[2]) - wall_start for r in rows if r[2] is not None)
    kinds = {phone_of(i): kind_of(i) for i in range(contacts)}
    expected_ok = Counter(kinds[r[1]] for r in rows if r[3] == KINDS[kinds[r[1]]][1])
    wrong = [(kinds[r[1]], r[3]) for r in rows if r[3] != KINDS[kinds[r[1]]][1]]
    data = {"contacts": contacts, "answer_timeout_s": answer_timeout, "attempts": len(rows),
            "placed_first_s": round(placed[0], 2) if placed else None, "placed_last_s": round(placed[-1], 2) if placed else None,
            "started_first_s": round(began[0], 2) if began else None, "started_last_s": round(began[-1], 2) if began else None,
            "turn_ms": percentiles(out.turn_ms) if out.turn_ms else None, "errors": len(out.errors), "error_examples": out.errors[:3],
            "answered_done_s": round(answered_s, 1), "all_settled_s": round(settled_s, 1),
            "cpu_s_per_turn": round(cpu / len(out.turn_ms), 4) if out.turn_ms else None, "dialer_cpu_s": round(dialer_cpu, 1),
            "outcome_as_expected": dict(expected_ok), "outcome_wrong": Counter(f"{k}→{o}" for k, o in wrong),
            "report": report.stdout,
            "direct": {"wall_s": round(base_s, 1), "turn_ms": percentiles(base.turn_ms) if base.turn_ms else None,
                       "errors": len(base.errors)},
            "dialer_vs_direct": round(answered_s / base_s, 2) if base_s else None}
    console.print(f"dialer: {len(rows)} calls claimed {data['placed_first_s']}–{data['placed_last_s']} s after start, their "
                  f"conversations begun {data['started_first_s']}–{data['started_last_s']} s; answered calls "
                  f"done in {data['answered_done_s']} s (direct {data['direct']['wall_s']} s: ×{data['dialer_vs_direct']}); "
                  f"all settled in {data['all_settled_s']} s; turn p50/p95 {data['turn_ms']}; errors {data['errors']}; "
                  f"CPU {data['cpu_s_per_turn']} s/turn, the dialer {data['dialer_cpu_s']} s in all")
    console.print(f"outcomes as the customer's kind should give: {dict(expected_ok)} of {dict(Counter(kinds.values()))}; "
                  f"otherwise: {dict(data['outcome_wrong'])}")
    console.print(report.stdout)
    console.print(f"saved {save('campaign', data)}")
