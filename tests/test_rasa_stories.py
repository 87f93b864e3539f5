"""Rasa's own conversation tests: the policies alone (`rasa test core`), then every demo scenario end to end
(`rasa test core --e2e`: the caller's words go through the running NLU service, then the policies)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import http

ROOT = Path(__file__).resolve().parent.parent
RASA = str(ROOT / ".venv-rasa" / "bin" / "rasa")
MODEL = ROOT / "bot" / "models" / "callbot.tar.gz"


def stories_in(path: Path) -> int:
    return len(yaml.safe_load(path.read_text(encoding="utf-8"))["stories"])


def rasa_test(stories: Path, out: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    env = {**env, "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([RASA, "test", "core", "--stories", str(stories), "--model", str(MODEL), "--out", str(out), "--no-plot", *extra],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    failed = out / "failed_test_stories.yml"
    failed_text = failed.read_text(encoding="utf-8") if failed.exists() else ""
    assert "story:" not in failed_text, failed_text
    return json.loads((out / "story_report.json").read_text())


@pytest.mark.rasa
def test_policies_route_every_mode_and_intent(tmp_path: Path) -> None:
    train = subprocess.run([str(ROOT / ".venv" / "bin" / "callbot"), "bot", "train"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr
    stories = ROOT / "bot" / "tests" / "test_conversations.yml"
    report = rasa_test(stories, tmp_path, dict(os.environ))
    assert report["conversation_accuracy"]["accuracy"] == 1.0
    assert report["conversation_accuracy"]["total"] == stories_in(stories) == 4


@pytest.mark.rasa
@pytest.mark.slow
def test_every_demo_scenario_end_to_end_through_the_nlu_service(dialogue_product: dict[str, Any], tmp_path: Path) -> None:
    stories = ROOT / "bot" / "tests" / "test_scenarios.yml"
    scenarios = {s["story"].split(":")[0] for s in yaml.safe_load(stories.read_text(encoding="utf-8"))["stories"]}
    assert scenarios == {"ipo_allotment_notice", "risk_assessment_expiry", "service_followup"}
    env = {**dialogue_product["env"], "CALLBOT_NLU_URL": dialogue_product["web"]}
    parses_before = http("GET", dialogue_product["web"] + "/nlu/status")[1]["parses"]
    report = rasa_test(stories, tmp_path, env, "--e2e")
    assert report["conversation_accuracy"]["accuracy"] == 1.0
    assert report["conversation_accuracy"]["total"] == stories_in(stories) == 18
    # The intents came from the NLU service, not from the story file: it served the parses.
    status, nlu = http("GET", dialogue_product["web"] + "/nlu/status")
    said = sum(1 for story in yaml.safe_load(stories.read_text(encoding="utf-8"))["stories"] for step in story["steps"] if "user" in step)
    assert status == 200 and nlu["parses"] >= parses_before + said > parses_before


@pytest.mark.rasa
def test_compiled_action_validation_still_rejects_a_malformed_action_response() -> None:
    script = """
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction
from rasa.utils.endpoints import EndpointConfig
from bot import action_validation

action_validation.install()
action = RemoteAction("action_check_compliance", EndpointConfig("http://127.0.0.1:1/webhook"))
assert action._validate_action_result({"events": [{"event": "slot", "name": "a", "value": 1}], "responses": [{"text": "hi"}]})
for bad in ({"events": "not a list"}, {"events": [{"no_event_key": 1}]}, {"responses": [1]}):
    try:
        action._validate_action_result(bad)
    except ValidationError as e:
        assert "Failed to validate Action server response" in e.message
    else:
        raise SystemExit(f"accepted {bad}")
print("ok")
"""
    result = subprocess.run([str(ROOT / ".venv-rasa" / "bin" / "python"), "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
