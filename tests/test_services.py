"""The whole product started for real: web app + NLU, action server, Rasa; then stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAFE_REPLY, as_staff, free_port, http, running_product

ROOT = Path(__file__).resolve().parent.parent
CALLBOT = str(Path(sys.executable).parent / "callbot")


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory, e5_model_dir: Path) -> Iterator[dict[str, Any]]:
    yield from running_product(tmp_path_factory)


@pytest.mark.slow
def test_chat_reaches_an_faq_answer_from_the_knowledge_base(product: dict[str, Any]) -> None:
    status, intents = http("GET", product["web"] + "/kb/scenarios/faq/intents")
    answer = next(i["answer"] for i in intents if i["name"] == "faq_open_account")
    status, reply = http("POST", product["rasa"] + "/webhooks/rest/webhook", {"sender": "u1", "message": "我想开个户怎么弄"})
    assert status == 200 and reply[0]["text"].endswith(answer) and reply[0]["text"].startswith("【")
    status, reply = http("POST", product["web"] + "/chat/send", {"sender": "web-u2-session", "message": "我想开个户怎么弄"})
    assert status == 200 and reply["messages"][0]["text"].endswith(answer)


@pytest.mark.slow
def test_knowledge_base_edit_is_matched_without_restart(product: dict[str, Any]) -> None:
    _, intents = http("GET", product["web"] + "/kb/scenarios/faq/intents")
    target = next(i for i in intents if i["name"] == "faq_reverse_repo_how_to")
    sentence = "放假前闲钱搁哪儿能生点利息"
    status, _ = http("POST", product["web"] + f"/kb/intents/{target['id']}/questions", {"text": sentence})
    assert status == 201
    deadline = time.monotonic() + 2.0
    while True:
        _, result = http("POST", product["web"] + "/nlu/parse", {"text": sentence, "scenario": "faq"})
        if result["matched"] and result["matched"]["intent"] == "faq_reverse_repo_how_to" and result["matched"]["question"] == sentence:
            break
        assert time.monotonic() < deadline, f"edit not visible within 2 s: {result['matched']}"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"text": "   "}, 400, "text is empty"),
        ({"text": "开户" * 5000}, 200, None),
        ({"text": "😀😀\u0007\u200b"}, 200, None),
        ({"text": "我想买ETF fund怎么操作"}, 200, None),
        ({"text": "嗯", "scenario": "no_such_scene"}, 404, "Unknown scenario 'no_such_scene'"),
        ({"scenario": "faq"}, 400, "text must be a string"),
        ([1, 2], 400, "JSON object"),
    ],
    ids=["blank", "10k-chars", "emoji-control", "mixed-language", "unknown-scenario", "no-text", "not-object"],
)
def test_parse_handles_bad_input(product: dict[str, Any], body: Any, status: int, needle: str | None) -> None:
    got, result = http("POST", product["web"] + "/nlu/parse", body)
    assert got == status, result
    if needle:
        assert needle in result["error"]
    else:
        assert result["decision"] in ("match", "ambiguous", "fallback") and result["kb_version"] >= 1




def stop_service(product: dict[str, Any], name: str, port_key: str) -> None:
    """Stop one service and wait until it is gone and its port is free (no sleeps as synchronisation)."""
    from callbot.services import port_is_free

    pid = int((product["home"] / "run" / f"{name}.pid").read_text())
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    port = int(product["env"][f"CALLBOT_PORTS__{port_key.upper()}"])
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            if port_is_free("127.0.0.1", port):
                return
        time.sleep(0.05)
    raise AssertionError(f"{name} (pid {pid}) did not stop within 30 s")


@pytest.fixture
def own_product(tmp_path_factory: pytest.TempPathFactory, e5_model_dir: Path) -> Iterator[dict[str, Any]]:
    """A product of its own for a test that stops one of its services: no other test sees the damage."""
    yield from running_product(tmp_path_factory)


@pytest.mark.slow
def test_dead_nlu_service_gives_nlu_fallback_not_a_crash(own_product: dict[str, Any]) -> None:
    product = own_product
    stop_service(product, "web", "web")
    status, parsed = http("POST", product["rasa"] + "/model/parse", {"text": "怎么开户"})
    assert status == 200 and parsed["intent"]["name"] == "nlu_fallback"
    assert parsed["callbot_nlu"]["error"] == "nlu_unavailable"
    status, reply = http("POST", product["rasa"] + "/webhooks/rest/webhook", {"sender": "u3", "message": "怎么开户"})
    assert status == 200 and reply and "系统有点忙" in reply[0]["text"]


@pytest.mark.slow
def test_foreground_up_stops_everything_on_ctrl_c(tmp_path: Path, e5_model_dir: Path) -> None:
    ports = {"web": free_port(), "rasa": free_port(), "actions": free_port(), "gateway": free_port()}
    env = {**os.environ, "CALLBOT_HOME": str(tmp_path), **{f"CALLBOT_PORTS__{k.upper()}": str(v) for k, v in ports.items()},
           "CALLBOT_VOICE__SIP_PORT": str(free_port())}  # the whole product, SIP gateway included
    assert subprocess.run([CALLBOT, "bot", "train"], cwd=ROOT, env=env, capture_output=True, timeout=600).returncode == 0
    proc = subprocess.Popen([CALLBOT, "up"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Press Ctrl-C to stop" in line or proc.poll() is not None:
            break
    assert any("/chat" in x for x in lines) and any("SIP gateway" in x for x in lines), "".join(lines)
    assert any("dialer is up" in x for x in lines), "".join(lines)
    status, _ = http("GET", f"http://127.0.0.1:{ports['rasa']}/status")
    assert status == 200
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the process group
    assert proc.wait(timeout=60) == 0
    rest = proc.stdout.read()
    assert "All services stopped" in rest
    from callbot.services import port_is_free

    assert all(port_is_free("127.0.0.1", p) for p in ports.values())
    assert not list((tmp_path / "run").glob("*.pid"))


@pytest.mark.slow
def test_dead_action_server_still_gets_a_safe_reply(own_product: dict[str, Any]) -> None:
    product = own_product
    status, reply = http("POST", product["rasa"] + "/webhooks/rest/webhook", {"sender": "u5", "message": "怎么开户"})
    assert status == 200 and reply and reply[0]["text"] != SAFE_REPLY and reply[0]["text"].startswith("【")  # alive: an answer
    stop_service(product, "actions", "actions")
    status, reply = http("POST", product["rasa"] + "/webhooks/rest/webhook", {"sender": "u4", "message": "怎么开户"})
    assert status == 200 and [m.get("text") for m in reply] == [SAFE_REPLY]
    assert f'SAFE_REPLY = "{SAFE_REPLY}"' in (ROOT / "bot" / "channels" / "rest_with_sender.py").read_text(encoding="utf-8")
    # Nothing is lost: the turn is in Rasa's SQL tracker store on disk, understood by the (living) NLU service.
    import sqlite3

    with sqlite3.connect(product["home"] / "rasa-tracker.db") as db:
        rows = db.execute("SELECT data FROM events WHERE sender_id = 'u4' AND type_name = 'user'").fetchall()
    events = [json.loads(data) for (data,) in rows]
    assert any(e["text"] == "怎么开户" and e["parse_data"]["intent"]["name"] == "faq" for e in events), events
    # Rasa itself down: the chat page's endpoint says so in a line a customer can read, with a status a client can act on.
    stop_service(product, "rasa", "rasa")
    status, body = http("POST", product["web"] + "/chat/send", {"sender": "web-u6-session", "message": "怎么开户"})
    assert status == 503 and body["error"] == "dialogue manager unavailable"
    assert body["messages"][0]["text"].startswith("系统暂时繁忙")


def post_file(url: str, name: str, content: bytes) -> tuple[int, Any]:
    """A multipart/form-data upload in field 'file', as the admin page sends it."""
    import urllib.error
    import urllib.request

    boundary = "----callbot-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **as_staff(url)})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


BAD_IMPORT = """schema_version: 1
scenarios:
  - code: http_import_case
    name: 上传测试
    kind: outbound
    steps:
      - code: ask
        prompt: 方便吗？
        transitions: {affirm: bye}
      - code: bye
        kind: closing
        prompt: 再见
        terminal: true
    intents:
      - {name: affirm, standard_question: 好的}
"""


@pytest.mark.slow
def test_importing_a_bad_file_over_http_writes_nothing(product: dict[str, Any]) -> None:
    _, before = http("GET", product["web"] + "/kb/stats")
    status, body = post_file(product["web"] + "/kb/import", "bad.yaml", BAD_IMPORT.encode())
    assert status == 422 and body["error"] == "import rejected; nothing was written"
    assert any(p.startswith("bad.yaml:13: ") and "no outcome" in p for p in body["problems"]), body
    status, body = post_file(product["web"] + "/kb/import", "binary.yaml", b"\x89PNG\r\n\x1a\n\x00\x00")
    assert status == 422 and any("binary" in p for p in body["problems"]), body
    status, body = http("POST", product["web"] + "/kb/import", {"file": "not a multipart upload"})
    assert status == 400 and "multipart form field 'file'" in body["error"]
    _, after = http("GET", product["web"] + "/kb/stats")
    assert after == before, "a rejected import changes nothing, not even the version"

