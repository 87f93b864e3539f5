"""Rasa's NLU component (bot/components/remote_similarity.py), run in Rasa's own environment against a real HTTP
server: a parse that reached a web worker dying mid-request (nginx's 502) is sent once more and understood; a
service that keeps failing gives nlu_fallback with the reason, never an exception inside Rasa."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import ROOT

RASA_PYTHON = str(ROOT / ".venv-rasa" / "bin" / "python")
PARSED = {"text": "是的", "intent": {"name": "affirm", "confidence": 0.93},
          "intent_ranking": [{"name": "affirm", "confidence": 0.93}, {"name": "deny", "confidence": 0.07}]}

SCRIPT = """
import json, sys
from bot.components.remote_similarity import RemoteSimilarityClassifier, NLU_PROPERTY
from rasa.shared.nlu.training_data.message import Message
c = RemoteSimilarityClassifier({**RemoteSimilarityClassifier.get_default_config(), "url": sys.argv[1], "timeout": 5})
m = Message(data={"text": "是的", "metadata": {"sender_id": "call-1"}})
c.process([m])
print(json.dumps({"intent": m.get("intent"), "nlu": m.get(NLU_PROPERTY)}, ensure_ascii=False))
"""


@pytest.fixture
def nlu_service() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"fail": 1, "calls": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 — http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state["calls"] += 1
            if state["calls"] <= state["fail"]:
                body, code = b"<html>502 Bad Gateway</html>", 502
            else:
                body, code = json.dumps(PARSED, ensure_ascii=False).encode(), 200
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()


def classify(url: str) -> dict[str, Any]:
    out = subprocess.run([RASA_PYTHON, "-c", SCRIPT, url], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_parse_cut_by_a_dying_web_worker_is_sent_again(nlu_service: dict[str, Any]) -> None:
    result = classify(nlu_service["url"])
    assert nlu_service["calls"] == 2
    assert result["intent"] == {"name": "affirm", "confidence": 0.93}


def test_a_service_that_keeps_failing_gives_fallback_with_the_reason(nlu_service: dict[str, Any]) -> None:
    nlu_service["fail"] = 10
    result = classify(nlu_service["url"])
    assert nlu_service["calls"] == 2, "one resend, not a loop"
    assert result["intent"]["name"] == "nlu_fallback"
    assert result["nlu"]["error"] == "nlu_unavailable"
