"""The `callbot` command as a user runs it: help everywhere, export, and clear errors for bad situations."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
CALLBOT = [str(Path(sys.executable).parent / "callbot")]  # the installed console script
SUBCOMMANDS = [[], ["up"], ["down"], ["status"], ["kb"], ["kb", "import"], ["kb", "export"], ["kb", "demo"], ["kb", "stats"],
               ["kb", "scenarios"], ["db"], ["db", "upgrade"], ["model"], ["model", "base"], ["model", "list"], ["model", "distill"], ["model", "train"], ["model", "finetune"], ["model", "verify"], ["model", "rate-generator"], ["model", "release"], ["model", "blend"],
               ["bot"], ["bot", "train"], ["nlu"], ["nlu", "match"], ["nlu", "embed"], ["nlu", "eval"], ["nlu", "calibrate"],
               ["nlu", "expand"], ["voice"], ["voice", "transcribe"], ["voice", "say"], ["voice", "gateway"], ["voice", "call"],
               ["campaign"], ["campaign", "create"], ["campaign", "start"], ["campaign", "report"], ["campaign", "dial"]]


def run(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "CALLBOT_HOME": str(home), "CALLBOT_CACHE_DIR": str(home / "cache"), **env}
    return subprocess.run([*CALLBOT, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("sub", SUBCOMMANDS, ids=lambda s: " ".join(s) or "callbot")
def test_every_subcommand_has_help(sub: list[str], tmp_path: Path) -> None:
    result = run([*sub, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_demo_then_export_json(tmp_path: Path) -> None:
    assert run(["kb", "demo"], tmp_path).returncode == 0
    result = run(["kb", "export", "--format", "json"], tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert len([s for s in doc["scenarios"] if s["kind"] == "outbound"]) >= 3
    assert sum(1 for s in doc["scenarios"] for it in s["intents"] if it["kind"] == "faq") >= 40
    bad = run(["kb", "export", "--format", "xml"], tmp_path)
    assert bad.returncode == 1 and "use --format json, yaml or csv" in bad.stderr


def test_import_of_malformed_file_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nscenarios:\n  - code: x\n    name: [unclosed\n", encoding="utf-8")
    result = run(["kb", "import", str(bad)], tmp_path)
    assert result.returncode == 3
    assert f"{bad}:" in result.stderr and "YAML syntax error" in result.stderr and "nothing was written" in result.stderr
    assert "Traceback" not in result.stderr


def test_locked_database_gives_a_clear_message_and_keeps_data(tmp_path: Path) -> None:
    assert run(["kb", "demo"], tmp_path).returncode == 0
    extra = tmp_path / "extra.csv"
    extra.write_text("scenario,intent,kind,standard_question,answer,text\nfaq,faq_new_one,faq,新问题,新答案,新的扩展问\n", encoding="utf-8")
    holder = sqlite3.connect(tmp_path / "callbot.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run(["kb", "import", str(extra)], tmp_path, CALLBOT_SQLITE_BUSY_TIMEOUT_S="0.3")
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 1
    assert "is locked by another process" in result.stderr and "Nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr
    stats = run(["kb", "export", "--format", "csv", "--scenario", "faq"], tmp_path)
    assert "faq_new_one" not in stats.stdout
    assert run(["kb", "import", str(extra)], tmp_path).returncode == 0  # and works once the lock is gone


def test_port_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run(["up", "--detach"], tmp_path, CALLBOT_PORTS__WEB=str(port))
    assert result.returncode == 1
    assert f"port {port} (web) is already in use" in result.stderr and "CALLBOT_PORTS__WEB" in result.stderr
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.pid"))


def test_missing_model_cache_says_how_to_build_it(tmp_path: Path) -> None:
    code = ("from nlu.model_cache import resolve_model; from pathlib import Path; import sys; "
            "resolve_model(Path(sys.argv[1]), 'e5-small')")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "Run `callbot model base`" in result.stderr


def test_unknown_scenario_export(tmp_path: Path) -> None:
    run(["kb", "demo"], tmp_path)
    result = run(["kb", "export", "--scenario", "no_such"], tmp_path)
    assert result.returncode == 4 and "Scenario 'no_such' does not exist" in result.stderr


def test_model_commands_refuse_names_albert_sim_cannot_find(tmp_path: Path) -> None:
    for args in (["model", "train", "--pairs", "", "--name", "mymodel"], ["model", "distill", "--name", "mymodel"]):
        result = run(args, tmp_path)
        assert result.returncode != 0 and "must start with 'albert-sim-'" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    groups = run(["model", "distill", "--layers", "4", "--groups", "3"], tmp_path)
    assert groups.returncode != 0 and "--groups 3 must divide --layers 4" in groups.stderr, groups.stderr
    missing = run(["model", "distill", "--source", str(tmp_path / "nothing-here")], tmp_path)
    assert missing.returncode != 0 and "is not a model directory" in missing.stderr, missing.stderr
    undistilled = run(["model", "train", "--pairs", ""], tmp_path)
    assert undistilled.returncode != 0 and "run `callbot model distill` first" in undistilled.stderr, undistilled.stderr


def test_model_list_shows_measurements_staleness_and_what_names_resolve_to(tmp_path: Path) -> None:
    import json

    from nlu.data.kb_split import SPLIT_ID

    models = tmp_path / "cache" / "models"
    shape = {"embedding_size": 256, "num_hidden_layers": 4, "intermediate_size": 768}
    for name, report in (
        ("albert-sim-new", {"quality": {"kb_heldout_top1": 0.71, "lcqmc_spearman": 75.2, "bq_spearman": 64.0},
                            "kb_split": SPLIT_ID, "kb_heldout_seen": False, "better_than_e5": False, "score": 46.6}),
        ("albert-sim-old", {"quality": {"kb_top1": 0.9}, "better_than_e5": False, "score": 60.0}),
        ("albert-sim-broken", None),
    ):
        (models / name).mkdir(parents=True)
        (models / name / "callbot_encoder.json").write_text(json.dumps({"stage": "pairs", "shape": shape}))
        (models / name / "verified.json").write_text(json.dumps(report) if report else "{not json")
        (models / name / "model.safetensors").write_bytes(b"")
    # The weaker encoder generates better: generator `auto` follows the measured generation.
    (models / "albert-sim-old" / "expansion.json").write_text(json.dumps({"useful_share": 0.12, "copy_bias": 3.0}))
    # Its int8 variant measured at least as good as e5: nlu.quantize=auto would serve it in int8.
    (models / "albert-sim-new" / "verified.int8.json").write_text(json.dumps(
        {"better_than_e5": True, "kb_split": SPLIT_ID, "kb_heldout_seen": False, "quantize": "int8"}))
    result = run(["model", "list"], tmp_path, COLUMNS="250")
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("│")}
    assert "0.71 / 75.2 / 64.0" in rows["albert-sim-new"] and "E256 L4 F768" in rows["albert-sim-new"]
    assert "albert-sim (int8)" in rows["albert-sim-new"].split("│")[-2], "the clean current measurement wins over a higher stale one"
    assert "stale measure" in rows["albert-sim-old"] and "callbot model verify albert-sim-old" in rows["albert-sim-old"]
    assert "12.0%" in rows["albert-sim-old"] and "generator" in rows["albert-sim-old"].split("│")[-2]
    assert "not rated" in rows["albert-sim-new"] and "generator" not in rows["albert-sim-new"].split("│")[-2]
    assert "unreadable verified.json" in rows["albert-sim-broken"]
    # Float32 failed the rule, int8 met it: `auto` serves the int8 variant, and the verdict says which passed.
    assert "auto (int8)" in rows["albert-sim-new"].split("│")[-2] and "int8 better" in rows["albert-sim-new"]
    (models / "albert-sim-new" / "verified.int8.json").unlink()
    result = run(["model", "list"], tmp_path, COLUMNS="250")
    assert "auto:" in result.stdout and "callbot model base" in result.stdout, "no e5-small built: says how to get it"


def test_model_train_refuses_a_negative_cosent_weight(tmp_path: Path) -> None:
    result = run(["model", "train", "--pairs", str(tmp_path / "pairs.tsv"), "--cosent-weight", "-1", "--source", str(tmp_path)], tmp_path)
    assert result.returncode == 1 and "--cosent-weight -1 must be 0 (off) or positive" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "cache" / "models").exists()


def test_model_train_refuses_a_kb_repeat_below_one(tmp_path: Path) -> None:
    result = run(["model", "train", "--pairs", str(tmp_path / "pairs.tsv"), "--kb-repeat", "0", "--source", str(tmp_path)], tmp_path)
    assert result.returncode == 1 and "--kb-repeat 0 must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "cache" / "models").exists()


def test_voice_call_names_what_is_wrong_before_dialling(tmp_path: Path) -> None:
    run(["kb", "demo"], tmp_path)
    unknown = run(["voice", "call", "sip:1@127.0.0.1", "--scenario", "no_such"], tmp_path)
    assert unknown.returncode != 0 and "Unknown scenario 'no_such'" in unknown.stderr and "ipo_allotment_notice" in unknown.stderr
    missing = run(["voice", "call", "sip:1@127.0.0.1", "--scenario", "ipo_allotment_notice", "--var", "amount=1"], tmp_path)
    assert missing.returncode != 0 and "--name" in missing.stderr and "--var stock_name=" in missing.stderr
    bad_var = run(["voice", "call", "sip:1@127.0.0.1", "--scenario", "ipo_allotment_notice", "--var", "amount"], tmp_path)
    assert bad_var.returncode != 0 and "write name=value" in bad_var.stderr
    args = ["voice", "call", "sip:1@127.0.0.1", "--scenario", "risk_assessment_expiry", "--name", "李女士",
            "--var", "risk_level=稳健型", "--var", "expiry_date=12月15日"]
    down = run(args, tmp_path, CALLBOT_PORTS__GATEWAY=str(free_port()))
    assert down.returncode != 0 and "gateway does not answer" in down.stderr and "callbot up" in down.stderr


def test_a_setting_out_of_range_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    """More calls per gateway worker than pjsua2 holds: refused before anything starts, naming the setting and
    where it came from, not an 'internal error'."""
    result = run(["status"], tmp_path, CALLBOT_VOICE__MAX_CALLS="8")
    assert result.returncode == 78, result.stderr
    assert "configuration error" in result.stderr and "voice.max_calls = '8'" in result.stderr
    assert "CALLBOT_VOICE__MAX_CALLS" in result.stderr and "Traceback" not in result.stderr
