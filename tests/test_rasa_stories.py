"""Rasa's own conversation tests (`rasa test core`) for the policies: every branch routes correctly."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.rasa
def test_conversation_stories_pass(tmp_path: Path) -> None:
    train = subprocess.run([str(ROOT / ".venv" / "bin" / "callbot"), "bot", "train"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr
    env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([str(ROOT / ".venv-rasa" / "bin" / "rasa"), "test", "core", "--stories", "bot/tests",
                             "--model", "bot/models/callbot.tar.gz", "--out", str(tmp_path), "--no-plot"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    failed = (tmp_path / "failed_test_stories.yml").read_text(encoding="utf-8") if (tmp_path / "failed_test_stories.yml").exists() else ""
    assert "story:" not in failed, failed
    report = json.loads((tmp_path / "story_report.json").read_text())
    assert report["conversation_accuracy"]["accuracy"] == 1.0
    assert report["conversation_accuracy"]["total"] == 4
