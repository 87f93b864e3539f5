"""Load test: many outbound conversations at once through Rasa's REST channel, as the text driver holds them.

`python -m benchmarks load` starts the product twice on free ports, the default profile (SQLite, one process of
each) and the scale profile (PostgreSQL, Redis, nginx, ``CALLBOT_BENCH_WORKERS`` workers of each, default 2), and
runs 50, 100 and 150 concurrent conversations (``CALLBOT_BENCH_LOADS``) against each: every conversation is an IPO
notice call (start, then four replies in words the NLU must match) with bounded loops, no think time. Reported per
load: turn p50/p95, errors, throughput, CPU seconds per turn over all the product's processes, and whether every
conversation's transcript and outcome are in the database afterwards. From the CPU per turn it estimates how many
2-core boxes 150 concurrent phone calls need, a call taking a turn every ``CALLBOT_BENCH_TURN_GAP_S`` seconds
(default 8: the caller speaks, the bot answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import ROOT, free_block, percentiles, save
from callbot.turns import send_turn_async

IPO_VARS = {"stock_name": "华安科技", "stock_code": "688001", "allotted_shares": 500, "amount": "12345.00", "pay_deadline": "11月25日"}
# Identity → notice → payment check → risk disclosure → closing: the confirmed path, in KB wordings.
REPLIES = ("是的", "会按时缴款的", "是的", "是的")
SAFE_REPLY = "抱歉，系统暂时有点忙"


@dataclass
class LoadResult:
    conversations: int
    turn_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


async def _conversation(client: httpx.AsyncClient, rasa: str, sender: str, result: LoadResult,
                        barrier: asyncio.Barrier | None, resume: asyncio.Event, turns: tuple[str, ...]) -> None:
    body = {"name": "EXTERNAL_start_call", "entities": {"scenario": "ipo_allotment_notice", "customer_name": "张先生",
                                                        "variables": IPO_VARS}}
    steps: list[tuple[str, Any]] = [("start", body)] + [("say", t) for t in turns]
    for n, (kind, payload) in enumerate(steps):
        if barrier is not None and n == 2:
            await barrier.wait()  # every conversation is between turns here: the hook runs now
            await resume.wait()
        t = time.perf_counter()
        try:
            if kind == "start":
                r = await client.post(f"{rasa}/conversations/{sender}/trigger_intent?output_channel=latest", json=payload)
                texts = [m.get("text", "") for m in (r.json().get("messages") or [])] if r.status_code == 200 else []
            else:
                r = await send_turn_async(client, f"{rasa}/webhooks/rest/webhook", {"sender": sender, "message": payload})
                texts = [m.get("text", "") for m in r.json()] if r.status_code == 200 else []
        except (httpx.HTTPError, ValueError) as exc:
            result.errors.append(f"{sender} turn {n}: {type(exc).__name__} {exc}"[:200])
            return
        result.turn_ms.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200 or not texts or any(SAFE_REPLY in x for x in texts):
            result.errors.append(f"{sender} turn {n}: HTTP {r.status_code} {texts[:1]}"[:200])
            return


async def drive(rasa: str, conversations: int, prefix: str, hook: Callable[[], Awaitable[None]] | None = None,
                turns: tuple[str, ...] = REPLIES) -> LoadResult:
    """``conversations`` calls at once; with ``hook``, all of them pause after their first reply while it runs."""
    result = LoadResult(conversations)
    barrier = asyncio.Barrier(conversations + 1) if hook else None
    resume = asyncio.Event()
    limits = httpx.Limits(max_connections=conversations + 10, max_keepalive_connections=conversations + 10)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        start = time.perf_counter()
        tasks = [asyncio.create_task(_conversation(client, rasa, f"{prefix}-{i}", result, barrier, resume, turns))
                 for i in range(conversations)]
        if hook is not None and barrier is not None:
            await barrier.wait()
            await hook()
            resume.set()
        await asyncio.gather(*tasks)
        result.wall_s = time.perf_counter() - start
    return result


def product_cpu_seconds(home: Path) -> float:
    """User + system CPU of every process of the product's process groups (pid files in home/run), children included."""
    groups = set()
    for pf in (home / "run").glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            groups.add(os.getpgid(int(pf.read_text().strip())))
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:  # pgrp
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def recorded(db_url: str, prefix: str) -> tuple[int, int, int]:
    """(conversations, with an outcome, with all their turns) of one load run, from the product's database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT c.outcome, (SELECT count(*) FROM conversation_turn t WHERE t.conversation_id = c.id) "
                                 "FROM conversation c WHERE c.external_id LIKE :p"), {"p": f"{prefix}-%"}).all()
    engine.dispose()
    # Each reply adds the caller's turn and at least one bot line; the opening adds one bot line.
    full = sum(1 for _o, n in rows if n >= 1 + 2 * len(REPLIES))
    return len(rows), sum(1 for o, _n in rows if o), full


@contextlib.contextmanager
def running(profile: str, workers: int) -> Iterator[dict[str, Any]]:
    callbot = str(Path(sys.executable).parent / "callbot")
    tmp = Path(tempfile.mkdtemp(prefix=f"callbot-load-{profile}-"))
    tmp.chmod(0o755)
    base = free_block(10 + 3 * workers)
    env = {**os.environ, "CALLBOT_HOME": str(tmp / "home"), "CALLBOT_VOICE__ENABLED": "false", "CALLBOT_CAMPAIGNS__DIALER": "false",
           "CALLBOT_NLU__MODEL": os.environ.get("CALLBOT_BENCH_NLU_MODEL", "e5-small"), "CALLBOT_NLU__USE_SCENARIO_MODELS": "false",
           **{f"CALLBOT_PORTS__{k}": str(base + n) for n, k in enumerate(("WEB", "RASA", "ACTIONS", "POSTGRES", "REDIS"))}}
    if profile == "scale":
        env.update({"CALLBOT_SCALE__POSTGRES_DIR": str(tmp / "pg"), "CALLBOT_SCALE__RASA_WORKERS": str(workers),
                    "CALLBOT_SCALE__ACTION_WORKERS": str(workers), "CALLBOT_SCALE__WEB_WORKERS": str(workers),
                    "CALLBOT_PORTS__RASA_WORKERS": str(base + 10), "CALLBOT_PORTS__ACTIONS_WORKERS": str(base + 10 + workers),
                    "CALLBOT_PORTS__WEB_WORKERS": str(base + 10 + 2 * workers)})
    else:
        done = subprocess.run([callbot, "kb", "demo"], cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
    up = subprocess.run([callbot, "up", "--detach", "--profile", profile], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        raise RuntimeError(up.stderr + up.stdout)
    db_url = (f"postgresql+psycopg://postgres@127.0.0.1:{env['CALLBOT_PORTS__POSTGRES']}/callbot" if profile == "scale"
              else f"sqlite:///{tmp / 'home' / 'callbot.db'}")
    try:
        yield {"env": env, "home": tmp / "home", "rasa": f"http://127.0.0.1:{env['CALLBOT_PORTS__RASA']}", "db_url": db_url}
    finally:
        subprocess.run([callbot, "down"], cwd=ROOT, env=env, capture_output=True, timeout=120)


def measure(product: dict[str, Any], load: int, tag: str) -> dict[str, Any]:
    cpu0 = product_cpu_seconds(product["home"])
    result = asyncio.run(drive(product["rasa"], load, tag))
    cpu = product_cpu_seconds(product["home"]) - cpu0
    convs, with_outcome, full = recorded(product["db_url"], tag)
    turns = len(result.turn_ms)
    return {"load": load, "turn_ms": percentiles(result.turn_ms) if result.turn_ms else None, "errors": len(result.errors),
            "error_examples": result.errors[:3], "turns": turns, "wall_s": round(result.wall_s, 1),
            "turns_per_s": round(turns / result.wall_s, 2) if result.wall_s else None,
            "cpu_s_per_turn": round(cpu / turns, 4) if turns else None,
            "recorded": {"conversations": convs, "with_outcome": with_outcome, "all_turns": full}}


def boxes_for(cpu_s_per_turn: float, calls: int = 150, turn_gap_s: float = 8.0, cores: int = 2, headroom: float = 0.7) -> int:
    """2-core boxes for ``calls`` concurrent calls taking a turn every ``turn_gap_s``, keeping 30 % of CPU free."""
    return max(1, math.ceil(calls / turn_gap_s * cpu_s_per_turn / (cores * headroom)))


def run(console: Any) -> None:
    loads = [int(x) for x in os.environ.get("CALLBOT_BENCH_LOADS", "50,100,150").split(",")]
    workers = int(os.environ.get("CALLBOT_BENCH_WORKERS", "2"))
    gap = float(os.environ.get("CALLBOT_BENCH_TURN_GAP_S", "8"))
    out: dict[str, Any] = {"loads": loads, "workers": workers, "turn_gap_s": gap, "profiles": {}}
    for profile in ("default", "scale"):
        rows = []
        with running(profile, workers) as product:
            asyncio.run(drive(product["rasa"], 4, f"warm-{profile}"))  # models loaded, caches warm
            for load in loads:
                row = measure(product, load, f"load-{profile}-{load}")
                rows.append(row)
                console.print(f"{profile:>7} × {load:>3}: turn p50 {row['turn_ms']['p50'] if row['turn_ms'] else '-'} ms, "
                              f"p95 {row['turn_ms']['p95'] if row['turn_ms'] else '-'} ms, errors {row['errors']}, "
                              f"{row['turns_per_s']} turns/s, CPU {row['cpu_s_per_turn']} s/turn, recorded {row['recorded']}")
        out["profiles"][profile] = rows
    base = out["profiles"]["default"][-1]
    scale = out["profiles"]["scale"][-1]
    if base["turn_ms"] and scale["turn_ms"]:
        out["scale_vs_default_p50"] = round(scale["turn_ms"]["p50"] / base["turn_ms"]["p50"], 2)
        out["scale_vs_default_throughput"] = round(scale["turns_per_s"] / base["turns_per_s"], 2)
    # The most efficient operating point measured (a box provisioned for its load), not an overloaded one.
    cpu = min(r["cpu_s_per_turn"] for rows in out["profiles"].values() for r in rows if r["cpu_s_per_turn"] and not r["errors"])
    out["boxes_for_150_calls"] = boxes_for(cpu, 150, gap)
    console.print(f"scale vs default at {loads[-1]}: p50 ×{out.get('scale_vs_default_p50')}, throughput "
                  f"×{out.get('scale_vs_default_throughput')}; 150 calls (a turn every {gap:g} s) need about "
                  f"{out['boxes_for_150_calls']} two-core boxes at {cpu} CPU s per turn (text only: ASR/TTS not counted)")
    console.print(f"saved {save('load', out)}")
