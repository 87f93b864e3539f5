"""The dialer with the text driver, against the running product (real Rasa, actions, database), killed mid-call.

The customer is played through the REST channel under each call's id, as a chat or SMS bridge would. The dialer
is killed with SIGKILL while a call is in flight; the customer finishes that call anyway; the restarted dialer
(same worker name) keeps the outcome the call recorded, never calls that customer again, and goes on.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import http

CALLBOT = str(Path(sys.executable).parent / "callbot")


def started_calls(product: dict[str, Any], campaign_id: str) -> list[str]:
    with sqlite3.connect(product["db"]) as db:
        return [r[0] for r in db.execute("SELECT call_id FROM call_attempt WHERE campaign_id = ? ORDER BY id", (campaign_id,))]


def wait_for_calls(product: dict[str, Any], campaign_id: str, count: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = started_calls(product, campaign_id)
        if len(calls) >= count:
            return calls
        time.sleep(0.3)
    raise AssertionError(f"the dialer placed {started_calls(product, campaign_id)}, expected {count} calls")


def wait_until_started(product: dict[str, Any], call_id: str, timeout: float = 60) -> None:
    """Until Rasa has stored the started call (its tracker says outbound): the dialer's start request is complete.
    The conversation row appears earlier, while Rasa still handles that request; a dialer killed then takes the
    request with it (Rasa drops a request whose client is gone) and the call never starts (settled as dropped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, tracker = http("GET", product["rasa"] + f"/conversations/{call_id}/tracker")
        if status == 200 and (tracker.get("slots") or {}).get("call_mode") == "outbound":
            return
        time.sleep(0.2)
    raise AssertionError(f"{call_id} was claimed but never started")


def say(product: dict[str, Any], sender: str, text: str) -> list[str]:
    status, reply = http("POST", product["rasa"] + "/webhooks/rest/webhook", {"sender": sender, "message": text})
    assert status == 200, reply
    return [m.get("text", "") for m in reply]


def started_campaign(env: dict[str, str], tmp_path: Path, scenario: str, customers_csv: str, *options: str) -> str:
    """Create a campaign from ``customers_csv`` through the CLI and start it; its id."""
    customers = tmp_path / "customers.csv"
    customers.write_text(customers_csv, encoding="utf-8")
    made = subprocess.run([CALLBOT, "campaign", "create", "--scenario", scenario, "--customers", str(customers), *options],
                          env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    campaign_id = made.stdout.split("campaign ")[1].split(" ")[0]
    assert subprocess.run([CALLBOT, "campaign", "start", campaign_id], env=env, capture_output=True, timeout=60).returncode == 0
    return campaign_id


def test_text_dialer_survives_kill_9_without_losing_or_repeating_a_call(dialogue_product: dict[str, Any], tmp_path: Path) -> None:
    product, env = dialogue_product, dialogue_product["env"]
    campaign_id = started_campaign(env, tmp_path, "risk_assessment_expiry", "name,phone,risk_level,expiry_date\n"
                                   "张先生,13800007777,稳健型,12月15日\n李女士,13900008888,积极型,12月20日\n",
                                   "--concurrency", "1", "--window", "00:00-24:00")
    args = [CALLBOT, "campaign", "dial", "--driver", "text", "--worker", "text-dialer"]
    dialer = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        first = wait_for_calls(product, campaign_id, 1)[0]
        wait_until_started(product, first)
        os.killpg(dialer.pid, signal.SIGKILL)  # mid-call: the attempt has no outcome yet
        dialer.wait(timeout=10)
        # The customer goes on with the call the dead dialer started, to the end (intents as buttons would send them:
        # this test is about the dialer, not about understanding).
        for text in ("/affirm", "/affirm", "/affirm", "/affirm"):
            say(product, first, text)
        restarted = subprocess.Popen(args + ["--until-idle"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        second = wait_for_calls(product, campaign_id, 2)[1]
        assert second != first
        wait_until_started(product, second)
        assert any("本人" in t or "不好意思" in t for t in say(product, second, "/wrong_person"))
        _out, err = restarted.communicate(timeout=90)
        assert restarted.returncode == 0, err
    finally:
        for proc in (dialer,):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    with sqlite3.connect(product["db"]) as db:
        attempts = db.execute("SELECT call_id, outcome FROM call_attempt WHERE campaign_id = ? ORDER BY id", (campaign_id,)).fetchall()
        contacts = db.execute("SELECT phone, status, attempts, last_outcome FROM campaign_contact WHERE campaign_id = ? "
                              "ORDER BY id", (campaign_id,)).fetchall()
        conv = db.execute("SELECT outcome FROM conversation WHERE external_id = ?", (first,)).fetchone()
    assert conv[0] in ("confirmed", "completed"), "the call finished after the crash recorded its outcome"
    assert attempts == [(first, conv[0]), (second, "wrong_person")], "no customer was called twice"
    assert contacts == [("13800007777", "done", 1, conv[0]), ("13900008888", "done", 1, "wrong_person")]


def test_a_customer_who_says_do_not_call_me_is_put_on_the_list(dialogue_product: dict[str, Any], tmp_path: Path) -> None:
    """Said in the customer's own words (understood by the NLU, not sent as an intent): the call closes politely with
    the one fact it must deliver, the attempt ends as do_not_call, and the number is refused by the next campaign."""
    product, env = dialogue_product, dialogue_product["env"]
    campaign_id = started_campaign(env, tmp_path, "ipo_allotment_notice",
                                   "name,phone,stock_name,stock_code,allotted_shares,amount,pay_deadline\n"
                                   "周先生,13700005555,华源科技,688001,500,16350.00,12月3日\n", "--window", "00:00-24:00")
    customers = tmp_path / "customers.csv"
    dialer = subprocess.Popen([CALLBOT, "campaign", "dial", "--driver", "text", "--worker", "dnc-dialer", "--until-idle"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        call = wait_for_calls(product, campaign_id, 1)[0]
        wait_until_started(product, call)
        said = " ".join(say(product, call, "你们以后别再给我打电话了，把我的号码删掉"))
        assert "不再" in said and "16350.00" in said, said
        _out, err = dialer.communicate(timeout=90)
        assert dialer.returncode == 0, err
    finally:
        if dialer.poll() is None:
            os.killpg(dialer.pid, signal.SIGKILL)
    with sqlite3.connect(product["db"]) as db:
        assert db.execute("SELECT outcome FROM call_attempt WHERE call_id = ?", (call,)).fetchone() == ("do_not_call",)
        assert db.execute("SELECT outcome FROM conversation WHERE external_id = ?", (call,)).fetchone() == ("do_not_call",)
        assert db.execute("SELECT count(*) FROM do_not_call WHERE phone = '13700005555'").fetchone() == (1,)
    again = subprocess.run([CALLBOT, "campaign", "create", "--scenario", "ipo_allotment_notice", "--customers", str(customers)],
                           env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "line 2: the number is on the do-not-call list" in again.stderr, again.stderr


def test_a_scenario_deleted_during_a_call_ends_it_politely_and_stops_the_campaign(dialogue_product: dict[str, Any],
                                                                                  tmp_path: Path) -> None:
    """An editor deletes the scenario while the dialer has a call on: the campaign stops at once with a note that
    says why, the customer's next words get a closing line instead of a script that no longer exists, the attempt
    is recorded, and the second customer is never called."""
    product, env = dialogue_product, dialogue_product["env"]
    campaign_id = started_campaign(env, tmp_path, "ipo_allotment_notice",
                                   "name,phone,stock_name,stock_code,allotted_shares,amount,pay_deadline\n"
                                   "吴先生,13700006666,华源科技,688001,500,16350.00,12月3日\n"
                                   "郑女士,13700007777,华源科技,688001,300,9810.00,12月3日\n",
                                   "--window", "00:00-24:00", "--concurrency", "1")
    dialer = subprocess.Popen([CALLBOT, "campaign", "dial", "--driver", "text", "--worker", "delete-dialer", "--until-idle"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        call = wait_for_calls(product, campaign_id, 1)[0]
        wait_until_started(product, call)
        refused = subprocess.run([CALLBOT, "kb", "delete-scenario", "ipo_allotment_notice"], env=env, capture_output=True,
                                 text=True, timeout=60)
        assert refused.returncode == 1 and "--yes" in refused.stderr, "a destructive command asks to be meant"
        deleted = subprocess.run([CALLBOT, "kb", "delete-scenario", "ipo_allotment_notice", "--yes", "--actor", "editor-li"],
                                 env=env, capture_output=True, text=True, timeout=60)
        assert deleted.returncode == 0 and f"Campaigns stopped: {campaign_id}" in deleted.stdout, deleted.stdout + deleted.stderr
        said = " ".join(say(product, call, "好的"))
        assert "取消" in said, said
        _out, err = dialer.communicate(timeout=90)
        assert dialer.returncode == 0, err
    finally:
        if dialer.poll() is None:
            os.killpg(dialer.pid, signal.SIGKILL)
        restored = subprocess.run([CALLBOT, "kb", "demo"], env=env, capture_output=True, text=True, timeout=300)
        assert restored.returncode == 0, restored.stderr
    assert started_calls(product, campaign_id) == [call], "the second customer is never called"
    with sqlite3.connect(product["db"]) as db:
        assert db.execute("SELECT outcome FROM call_attempt WHERE call_id = ?", (call,)).fetchone() == ("dropped",)
        assert db.execute("SELECT outcome FROM conversation WHERE external_id = ?", (call,)).fetchone() == ("dropped",)
        status, note = db.execute("SELECT status, status_note FROM campaign WHERE id = ?", (campaign_id,)).fetchone()
    assert status == "stopped" and "ipo_allotment_notice" in note and "editor-li" in note
    resumed = subprocess.run([CALLBOT, "campaign", "resume", campaign_id], env=env, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 1 and "was deleted from the knowledge base" in resumed.stderr, resumed.stderr
