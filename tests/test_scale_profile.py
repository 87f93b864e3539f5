"""`callbot up --profile scale`: PostgreSQL, Redis, two Rasa instances, two action servers and two web apps behind
nginx, started for real. Conversations are spread over the instances; one Rasa instance and one action server are
killed with SIGKILL between turns and every conversation still ends with its transcript and outcome recorded."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from benchmarks.common import free_block
from benchmarks.load import IPO_VARS, REPLIES, drive, recorded
from tests.conftest import ROOT, link_fresh_e5

CALLBOT = str(Path(sys.executable).parent / "callbot")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scaled(e5_model_dir: Path) -> Iterator[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="callbot-scale-"))
    tmp.chmod(0o755)  # the postgres user reaches its cluster below
    (tmp / "cache" / "models").mkdir(parents=True)
    link_fresh_e5(tmp / "cache" / "models", e5_model_dir)
    base = free_block(40)
    env = {**os.environ, "CALLBOT_HOME": str(tmp / "home"), "CALLBOT_CACHE_DIR": str(tmp / "cache"),
           "CALLBOT_SCALE__POSTGRES_DIR": str(tmp / "pg"), "CALLBOT_VOICE__ENABLED": "false", "CALLBOT_CAMPAIGNS__DIALER": "false",
           "CALLBOT_NLU__MODEL": "e5-small", "CALLBOT_NLU__USE_SCENARIO_MODELS": "false",
           **{f"CALLBOT_PORTS__{k}": str(base + n) for n, k in enumerate(("WEB", "RASA", "ACTIONS", "POSTGRES", "REDIS"))},
           "CALLBOT_PORTS__RASA_WORKERS": str(base + 10), "CALLBOT_PORTS__ACTIONS_WORKERS": str(base + 20),
           "CALLBOT_PORTS__WEB_WORKERS": str(base + 30)}
    trained = subprocess.run([CALLBOT, "bot", "train"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert trained.returncode == 0, trained.stderr
    up = subprocess.run([CALLBOT, "up", "--detach", "--profile", "scale"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=900)
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        for name in ("postgres", "redis", "rasa-1", "rasa-2", "actions-1", "actions-2", "web-1", "web-2", "nginx"):
            assert f"{name} is up" in up.stderr, up.stderr
        assert "loaded the demo knowledge base into PostgreSQL" in up.stderr
        yield {"env": env, "home": tmp / "home", "rasa": f"http://127.0.0.1:{env['CALLBOT_PORTS__RASA']}",
               "web": f"http://127.0.0.1:{env['CALLBOT_PORTS__WEB']}",
               "pg": f"postgresql+psycopg://postgres@127.0.0.1:{env['CALLBOT_PORTS__POSTGRES']}"}
    finally:
        down = subprocess.run([CALLBOT, "down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert down.returncode == 0, down.stderr
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


async def _kill(home: Path, name: str, port: int) -> None:
    """SIGKILL, then wait until the port refuses connections: a dying process's socket still accepts for a moment,
    and nginx does not resend a POST it has already passed on (in flight at the crash, the caller gets a 502)."""
    os.killpg(int((home / "run" / f"{name}.pid").read_text()), signal.SIGKILL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} still accepts connections on {port}")


def test_conversations_survive_a_dead_rasa_instance_and_action_server(scaled: dict[str, Any]) -> None:
    async def kill_one_of_each() -> None:
        await _kill(scaled["home"], "rasa-1", int(scaled["env"]["CALLBOT_PORTS__RASA_WORKERS"]))
        await _kill(scaled["home"], "actions-1", int(scaled["env"]["CALLBOT_PORTS__ACTIONS_WORKERS"]))

    result = asyncio.run(drive(scaled["rasa"], 24, "scale", hook=kill_one_of_each))
    assert result.errors == [], result.errors[:5]
    assert len(result.turn_ms) == 24 * (1 + len(REPLIES))
    assert recorded(scaled["pg"] + "/callbot", "scale") == (24, 24, 24), "every transcript and outcome is in PostgreSQL"
    engine = create_engine(scaled["pg"] + "/callbot")
    with engine.connect() as conn:
        outcomes = conn.execute(text("SELECT outcome, count(*) FROM conversation WHERE external_id LIKE 'scale-%' GROUP BY outcome")).all()
    engine.dispose()
    assert outcomes == [("confirmed", 24)]
    tracker = create_engine(scaled["pg"] + "/rasa_tracker")
    with tracker.connect() as conn:
        senders = conn.execute(text("SELECT count(DISTINCT sender_id) FROM events WHERE sender_id LIKE 'scale-%'")).scalar()
    tracker.dispose()
    assert senders == 24, "Rasa keeps the conversations in PostgreSQL, not in one instance's memory"
    # No CALLBOT_PROFILE here: `callbot status` reads the profile `callbot up` started from the run directory.
    status = subprocess.run([CALLBOT, "status"], cwd=ROOT, env={**scaled["env"], "COLUMNS": "120"},
                            capture_output=True, text=True, timeout=60)
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("│┃ ").split("│")] for line in status.stdout.splitlines())
            if cells and cells[0] in ("rasa-1", "rasa-2", "actions-1", "nginx", "postgres")}
    assert [rows[n][-1] for n in ("rasa-1", "rasa-2", "actions-1", "nginx", "postgres")] == ["no", "yes", "no", "yes", "yes"], status.stdout


def test_two_messages_of_one_conversation_at_once_are_handled_one_after_the_other(scaled: dict[str, Any]) -> None:
    """Redis's lock: two instances never process one conversation at the same time, so neither turn is lost."""
    rasa = scaled["rasa"]

    async def both() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            await client.post(f"{rasa}/webhooks/rest/webhook", json={"sender": "lock-1", "message": "你好"})
            replies = await asyncio.gather(*(client.post(f"{rasa}/webhooks/rest/webhook", json={"sender": "lock-1", "message": m})
                                             for m in ("怎么开户", "交易时间是什么时候")))
            return [r.status_code for r in replies]

    assert asyncio.run(both()) == [200, 200]
    engine = create_engine(scaled["pg"] + "/callbot")
    with engine.connect() as conn:
        users = conn.execute(text("SELECT t.text FROM conversation_turn t JOIN conversation c ON c.id = t.conversation_id "
                                  "WHERE c.external_id = 'lock-1' AND t.speaker = 'user' ORDER BY t.seq")).scalars().all()
    engine.dispose()
    assert users[0] == "你好" and sorted(users[1:]) == sorted(["怎么开户", "交易时间是什么时候"])
    tracker = create_engine(scaled["pg"] + "/rasa_tracker")
    with tracker.connect() as conn:
        said = conn.execute(text("SELECT count(*) FROM events WHERE sender_id = 'lock-1' AND type_name = 'user'")).scalar()
    tracker.dispose()
    assert said == 3, "both concurrent messages are in the one tracker"


def test_a_turn_resent_through_nginx_is_processed_once_and_a_dead_holders_turn_is_taken_over(scaled: dict[str, Any]) -> None:
    """Turn ids (bot/channels/turn_ledger.py) in Redis, seen by both Rasa instances: a resend of a finished turn gets
    its first replies whichever instance nginx picks; a turn left "processing" by an instance that died is processed
    once its lease runs out."""
    import redis

    rasa = scaled["rasa"]
    ledger = redis.Redis(host="127.0.0.1", port=int(scaled["env"]["CALLBOT_PORTS__REDIS"]), db=2)
    with httpx.Client(timeout=120) as client:
        client.post(f"{rasa}/conversations/resend-s/trigger_intent?output_channel=latest",
                    json={"name": "EXTERNAL_start_call", "entities": {"scenario": "ipo_allotment_notice", "customer_name": "张先生",
                                                                      "variables": IPO_VARS}}).raise_for_status()
        body = {"sender": "resend-s", "message": "是的", "metadata": {"turn_id": "s-t1"}}
        replies = [client.post(f"{rasa}/webhooks/rest/webhook", json=body) for _ in range(3)]
        assert [r.status_code for r in replies] == [200] * 3
        assert replies[0].json() and replies[1].json() == replies[0].json() == replies[2].json()
        ledger.set("callbot:turn:resend-s:s-t2", '{"state": "processing"}', px=2000)  # what a killed instance leaves
        started = time.monotonic()
        late = client.post(f"{rasa}/webhooks/rest/webhook", json={"sender": "resend-s", "message": "是的", "metadata": {"turn_id": "s-t2"}})
        waited = time.monotonic() - started
    assert late.status_code == 200 and late.json() and late.json() != replies[0].json()
    assert waited > 1.0, "the resend waited for the dead holder's lease"
    tracker = create_engine(scaled["pg"] + "/rasa_tracker")
    with tracker.connect() as conn:
        said = conn.execute(text("SELECT count(*) FROM events WHERE sender_id = 'resend-s' AND type_name = 'user' "
                                 "AND intent_name <> 'EXTERNAL_start_call'")).scalar()
    tracker.dispose()
    assert said == 2, "three sends of the first turn and one of the second: two turns in the tracker"


def test_an_agents_reply_reaches_the_customer_whose_socket_is_on_another_web_worker(scaled: dict[str, Any]) -> None:
    """The widget's socket on web-1, the agent's reply posted to web-2: it travels through Redis to the customer."""
    import threading

    import socketio

    from tests.conftest import staff_token

    env = {**scaled["env"], "CALLBOT_PROFILE": "scale"}
    web1, web2 = (f"http://127.0.0.1:{int(env['CALLBOT_PORTS__WEB_WORKERS']) + i}" for i in range(2))
    session, received = "web-scale-handover-0001", []
    handed, agent_line, confirmed = threading.Event(), threading.Event(), threading.Event()

    def on_bot(data: dict[str, Any]) -> None:
        received.append(data)
        if data.get("agent"):
            agent_line.set()
        elif data.get("handoff"):
            handed.set()

    customer = socketio.Client(reconnection=False)
    customer.on("bot_uttered", on_bot)
    customer.on("session_confirm", lambda _data: confirmed.set())
    customer.connect(web1, transports=["websocket"], wait_timeout=30)
    try:
        customer.emit("session_request", {"session_id": session})
        assert confirmed.wait(30)
        customer.emit("user_uttered", {"message": "转人工", "session_id": session})
        assert handed.wait(120), received
        auth = {"Authorization": "Bearer " + staff_token(env, "scale-agent", "agent")}
        queue = httpx.get(web2 + "/desk/handovers", headers=auth, timeout=30).json()
        ticket = next(h for h in queue["open"] if h["session_id"] == session)
        assert httpx.post(web2 + f"/desk/handovers/{ticket['id']}/pick", headers=auth, timeout=30).status_code == 200
        sent = httpx.post(web2 + f"/desk/handovers/{ticket['id']}/reply", json={"text": "跨实例的人工回复"}, headers=auth, timeout=30)
        assert sent.status_code == 201, sent.text
        assert agent_line.wait(15), f"the reply did not cross workers: {received}"
        assert [d["text"] for d in received if d.get("agent")] == ["跨实例的人工回复"]
    finally:
        customer.disconnect()
