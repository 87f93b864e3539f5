"""The web layer's own costs, each against a baseline measured in the same run on the running product:

- the auth gate: a guarded read (`GET /kb/version` with an API token: one session lookup) vs the public
  `GET /health` (the same KB-version query, no gate);
- signing in: `POST /auth/login` (Argon2id verification) vs the public health check;
- the widget's channel: a message through the web app's socket.io relay and through its REST fallback
  (`POST /chat/send`) vs the same message sent straight to Rasa's REST channel.
"""

from __future__ import annotations

import threading
import time

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.common import percentiles, running_product, save, time_calls

MESSAGES = ["我想开个户怎么弄", "交易时间是几点", "密码忘了怎么办", "逆回购怎么买", "佣金能不能低一点", "科创板权限怎么开"]


def _socket_turns(web: str, n: int) -> list[float]:
    """Round trips user_uttered → first bot_uttered over a real socket.io connection (websocket transport)."""
    import socket

    import socketio

    # TCP_NODELAY as browsers set it: without it the client's small frames wait on delayed ACKs (~40 ms each).
    client = socketio.Client(reconnection=False, websocket_extra_options={
        "sockopt": [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]})
    got = threading.Event()
    client.on("bot_uttered", lambda _data: got.set())
    confirmed = threading.Event()
    client.on("session_confirm", lambda _data: confirmed.set())
    client.connect(web, transports=["websocket"], wait_timeout=30)
    samples = []
    try:
        for i in range(n):
            session = f"bench-socket-{i // 6:06d}"  # a new conversation every six messages, as the REST runs
            if i % 6 == 0:
                confirmed.clear()
                client.emit("session_request", {"session_id": session})
                confirmed.wait(30)
            got.clear()
            t = time.perf_counter()
            client.emit("user_uttered", {"message": MESSAGES[i % len(MESSAGES)], "session_id": session})
            if not got.wait(30):
                raise RuntimeError("no bot_uttered within 30 s")
            samples.append((time.perf_counter() - t) * 1000)
            time.sleep(0.2)  # let the rest of the turn's replies arrive before the next message
    finally:
        client.disconnect()
    return samples


def _sender(c: httpx.Client, url: str, prefix: str):  # type: ignore[no-untyped-def]
    """One message per call; a new conversation every six messages."""
    count = iter(range(10**6))

    def send() -> None:
        i = next(count)
        c.post(url, json={"sender": f"{prefix}-{i // 6:06d}", "message": MESSAGES[i % len(MESSAGES)]})

    return send


def run(console: Console, n: int = 60) -> dict:
    results: dict = {}
    with running_product("e5-small") as product, httpx.Client(timeout=30) as c:
        web, rasa, auth = product["web"], product["rasa"], product["auth"]
        results["health_public"] = percentiles(time_calls(lambda: c.get(web + "/health"), 200))
        results["kb_version_guarded"] = percentiles(time_calls(lambda: c.get(web + "/kb/version", headers=auth), 200))
        password = "bench sign-in passphrase"
        c.post(web + "/auth/users", headers=auth, json={"username": "bench-login", "password": password, "role": "viewer"})
        results["login"] = percentiles(time_calls(
            lambda: c.post(web + "/auth/login", json={"username": "bench-login", "password": password}), 30, warmup=2))
        results["rasa_rest"] = percentiles(time_calls(_sender(c, rasa + "/webhooks/rest/webhook", "bench-rasa"), n))
        results["chat_send_rest"] = percentiles(time_calls(_sender(c, web + "/chat/send", "bench-rest"), n))
        results["chat_socketio"] = percentiles(_socket_turns(web, n))
    base, rasa_base = results["health_public"]["p50"], results["rasa_rest"]["p50"]
    table = Table("what", "p50 ms", "p95 ms", "vs baseline")
    for key, label, ref in (("health_public", "GET /health (public, baseline)", base),
                            ("kb_version_guarded", "GET /kb/version (API token checked)", base),
                            ("login", "POST /auth/login (Argon2id)", base),
                            ("rasa_rest", "Rasa REST channel directly (baseline)", rasa_base),
                            ("chat_send_rest", "widget REST fallback /chat/send", rasa_base),
                            ("chat_socketio", "widget socket.io relay", rasa_base)):
        r = results[key]
        table.add_row(label, f"{r['p50']:.1f}", f"{r['p95']:.1f}", f"{r['p50'] / ref:.2f}×")
    console.print(table)
    results["overhead_ms"] = {"gate": round(results["kb_version_guarded"]["p50"] - base, 2),
                              "relay_rest": round(results["chat_send_rest"]["p50"] - rasa_base, 2),
                              "relay_socketio": round(results["chat_socketio"]["p50"] - rasa_base, 2)}
    save("web", results)
    return results
