"""Several gateway workers behind Kamailio's dispatcher (`voice.workers`), started by `callbot up`.

Two workers that hold one call each: two callers at once are both answered (round-robin, or the full worker passes
the call on), a third is told 486 Busy Here, and `callbot status` lists every process.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, running_product
from voice.farend.rtp_peer import RtpPeer
from voice.farend.sipp import Sipp, caller


def free_udp_run(count: int) -> int:
    """The first of ``count`` consecutive free UDP ports."""
    for _ in range(200):
        base = random.randint(21000, 29000)
        socks = []
        try:
            for n in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", base + n))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of free UDP ports")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, e5_model_dir: Path) -> Iterator[dict[str, Any]]:
    sip_port, base = free_udp_run(1), free_udp_run(2)
    control = free_port()
    while not all(_tcp_free(control + n) for n in range(2)):
        control = free_port()
    env = {"CALLBOT_VOICE__ENABLED": "true", "CALLBOT_VOICE__WORKERS": "2", "CALLBOT_VOICE__MAX_CALLS": "1",
           "CALLBOT_VOICE__SIP_PORT": str(sip_port), "CALLBOT_VOICE__WORKER_SIP_BASE": str(base),
           "CALLBOT_PORTS__GATEWAY": str(control)}
    for product in running_product(tmp_path_factory, env):
        yield {**product, "sip": f"127.0.0.1:{sip_port}"}


def _tcp_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_calls_spread_over_workers_and_the_overflow_is_busy(two_workers: dict[str, Any], tmp_path: Path) -> None:
    peers = [RtpPeer(), RtpPeer()]
    calls = [Sipp(caller(hold_ms=25_000), tmp_path, free_port(), p.port, target=two_workers["sip"]) for p in peers]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(p.received_speech() for p in peers):
            time.sleep(0.2)
        assert all(p.received_speech() for p in peers), "both callers are greeted"
        overflow = Sipp(caller(hold_ms=5_000), tmp_path, free_port(), RtpPeer().port, target=two_workers["sip"])
        assert overflow.wait(timeout=30) == 0, overflow.errors()
        assert "SIP/2.0 486" in overflow.messages(), "with both workers full the third caller hears busy"
        for call in calls:
            assert call.wait(timeout=60) == 0, call.errors()
    finally:
        for call in calls:
            call.stop()
        for p in peers:
            p.close()
    status = subprocess.run([str(Path(sys.executable).parent / "callbot"), "status"], env=two_workers["env"],
                            capture_output=True, text=True, timeout=60)
    for name in ("gateway-1", "gateway-2", "dispatcher"):
        assert name in status.stdout, status.stdout
    logs = [(two_workers["home"] / "log" / f"gateway-{n}.log").read_text() for n in (1, 2)]
    assert all("incoming call" in log for log in logs), "each worker took a call"
