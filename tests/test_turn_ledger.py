"""The turn ledger (bot/channels/turn_ledger.py): a resent turn is answered from the first processing, a turn whose
holder died is taken over when its lease runs out, and a failed processing frees the turn at once. In memory and
in a real redis-server (the scale profile's lock store)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bot.channels.turn_ledger import MemoryTurnLedger, RedisTurnLedger, process_once, turn_key
from callbot.turns import with_turn_id
from tests.conftest import free_port


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = shutil.which("redis-server")
    assert server, "redis-server is installed by scripts/install.sh (Debian redis-server)"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="callbot-ledger-")
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/2"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def ledger(kind: str, url: str, **kw: Any) -> Any:
    return MemoryTurnLedger(**kw) if kind == "memory" else RedisTurnLedger(url, **kw)


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def test_turn_keys_need_a_sensible_id() -> None:
    assert turn_key("call-1", "abc") == "callbot:turn:call-1:abc"
    assert turn_key("call-1", None) is None and turn_key("call-1", "") is None and turn_key("call-1", 7) is None
    assert turn_key("call-1", "x" * 500) is None
    body = with_turn_id({"sender": "s", "message": "是的", "metadata": {"channel": "chat"}})
    assert body["metadata"]["channel"] == "chat" and len(body["metadata"]["turn_id"]) == 32
    assert with_turn_id(body)["metadata"]["turn_id"] == body["metadata"]["turn_id"], "a resend keeps its id"


def test_a_resent_turn_is_answered_without_processing_it_again(kind: str, redis_url: str) -> None:
    calls: list[int] = []

    async def work() -> list[dict[str, Any]]:
        calls.append(1)
        await asyncio.sleep(0.2)
        return [{"text": f"第{len(calls)}次处理"}]

    async def run() -> list[list[dict[str, Any]]]:
        led = ledger(kind, redis_url)
        key = turn_key("call-resend", f"t-{kind}-{time.time()}")
        first, second = await asyncio.gather(process_once(led, key, work), process_once(led, key, work))  # both at once
        third = await process_once(led, key, work)  # after it finished
        return [first, second, third]

    results = asyncio.run(run())
    assert calls == [1], "processed exactly once"
    assert results == [[{"text": "第1次处理"}]] * 3


def test_a_turn_whose_holder_died_is_taken_over_after_its_lease(kind: str, redis_url: str) -> None:
    async def run() -> tuple[float, list[dict[str, Any]]]:
        led = ledger(kind, redis_url, lease_s=0.6)
        key = turn_key("call-dead", f"t-{kind}-{time.time()}")
        assert (await led.claim(key)).action == "process"  # a holder that is then killed: it never renews nor finishes
        started = time.monotonic()

        async def work() -> list[dict[str, Any]]:
            return [{"text": "接手处理"}]

        out = await process_once(led, key, work)
        return time.monotonic() - started, out

    waited, out = asyncio.run(run())
    assert out == [{"text": "接手处理"}]
    assert 0.3 < waited < 5.0, f"the resend waited out the dead holder's lease, not longer ({waited:.2f} s)"


def test_a_live_holder_keeps_its_turn_past_the_lease(kind: str, redis_url: str) -> None:
    calls: list[int] = []

    async def slow() -> list[dict[str, Any]]:
        calls.append(1)
        await asyncio.sleep(1.5)  # longer than the lease: the heartbeat must renew it
        return [{"text": "慢"}]

    async def run() -> list[list[dict[str, Any]]]:
        led = ledger(kind, redis_url, lease_s=0.6)
        key = turn_key("call-slow", f"t-{kind}-{time.time()}")
        first = asyncio.ensure_future(process_once(led, key, slow))
        await asyncio.sleep(0.3)
        return [await process_once(led, key, slow), await first]

    assert asyncio.run(run()) == [[{"text": "慢"}]] * 2
    assert calls == [1]


def test_a_failed_processing_frees_the_turn_at_once(kind: str, redis_url: str) -> None:
    async def broken() -> list[dict[str, Any]]:
        raise RuntimeError("action server down")

    async def fine() -> list[dict[str, Any]]:
        return [{"text": "好了"}]

    async def run() -> tuple[float, list[dict[str, Any]]]:
        led = ledger(kind, redis_url, lease_s=30)
        key = turn_key("call-broken", f"t-{kind}-{time.time()}")
        with pytest.raises(RuntimeError):
            await process_once(led, key, broken)
        started = time.monotonic()
        out = await process_once(led, key, fine)
        return time.monotonic() - started, out

    waited, out = asyncio.run(run())
    assert out == [{"text": "好了"}] and waited < 1.0


def test_a_turn_finished_by_its_holder_at_the_takeover_deadline_is_replayed(kind: str, redis_url: str) -> None:
    """The waiting resend's deadline passes just as the holder finishes: it must replay the answer, not overwrite
    the finished turn and process it a second time."""

    async def run() -> Any:
        led = ledger(kind, redis_url, wait_s=0.0)  # every claim is already at its deadline
        key = turn_key("call-deadline", f"t-{kind}-{time.time()}")
        assert (await led.claim(key)).action == "process"
        await led.finish(key, [{"text": "已处理"}])
        return await led.claim(key)

    claim = asyncio.run(run())
    assert claim.action == "replay" and claim.messages == [{"text": "已处理"}]
