"""Campaigns without telephony: the customer file's checks, and the dialer's rules with a stand-in call driver.

The dialer with real calls (the SIP gateway and sipp callees) and with the text driver through Rasa is in
tests/test_campaign_dialing.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from campaigns.customers import CustomerFileError
from campaigns.dialer import Dialer
from campaigns.service import Campaigns, Claim
from knowledge_base.errors import CallbotError
from knowledge_base.models import CallAttempt, Campaign, CampaignContact, Conversation, Outcome

IPO_HEADER = "name,phone,stock_name,stock_code,allotted_shares,amount,pay_deadline\n"


def ipo_row(name: str, phone: str, amount: str = "16350.00") -> str:
    return f"{name},{phone},华源科技,688001,500,{amount},12月3日\n"


@pytest.fixture
def campaigns(kb, demo_file: Path) -> Campaigns:  # type: ignore[no-untyped-def]
    kb.import_files([demo_file])
    return Campaigns(kb.store)


class ScriptedCalls:
    """A call driver whose calls end with the outcomes a test lists per phone number, one per attempt."""
    name = "scripted"

    def __init__(self, outcomes: dict[str, list[str]]):
        self.outcomes = outcomes
        self.placed: list[Claim] = []
        self.live: set[str] = set()
        self.most_at_once = 0

    def place(self, claim: Claim) -> None:
        self.placed.append(claim)
        self.live.add(claim.call_id)
        self.most_at_once = max(self.most_at_once, len(self.live))

    def outcome(self, claim: Claim) -> str | None:
        self.live.discard(claim.call_id)
        return self.outcomes[claim.phone].pop(0)


def test_every_bad_line_is_named_and_nothing_is_written(campaigns: Campaigns, tmp_path: Path) -> None:
    campaigns.do_not_call("13700001111", "asked not to be called")
    path = tmp_path / "customers.csv"
    path.write_text(IPO_HEADER + ipo_row("张三", "13800001111") + ipo_row("李四", "12345") + ipo_row("王五", "13800001111")
                    + ipo_row("赵六", "13700001111") + "钱七,13900001111,华源科技,688001,500,,12月3日\n", encoding="utf-8")
    with pytest.raises(CustomerFileError) as err:
        campaigns.create("ipo_allotment_notice", path)
    text = str(err.value)
    assert "line 3: bad phone number '12345'" in text and "line 4: duplicate of line 2" in text
    assert "line 5: the number is on the do-not-call list" in text and "line 6: missing amount" in text
    assert "line 2" not in text.split("problem(s)")[1].split("duplicate")[0], "a good line is not reported"
    with campaigns.store.session() as s:
        assert s.scalar(select(func.count(Campaign.id))) == 0


def test_gbk_and_bom_files_and_unreadable_ones(campaigns: Campaigns, tmp_path: Path) -> None:
    rows = "姓名,手机,stock_name,stock_code,allotted_shares,amount,pay_deadline\n" + ipo_row("张三", "+86 138-0000-2222")
    gbk, bom = tmp_path / "gbk.csv", tmp_path / "bom.csv"
    gbk.write_bytes(rows.encode("gbk"))
    bom.write_bytes(rows.replace("13800002222", "13800003333").encode("utf-8-sig"))
    assert campaigns.create("ipo_allotment_notice", gbk)["contacts"] == 1
    assert campaigns.create("ipo_allotment_notice", bom)["contacts"] == 1
    binary, empty, short = tmp_path / "x.csv", tmp_path / "e.csv", tmp_path / "s.csv"
    binary.write_bytes(b"PK\x03\x04\x00\x00" + bytes(100))
    empty.write_text("")
    short.write_text("name,phone\n张三,13800004444\n")
    for path, says in ((binary, "binary file"), (empty, "empty"), (short, r"missing column\(s\) stock_name")):
        with pytest.raises(CallbotError, match=says):
            campaigns.create("ipo_allotment_notice", path)
    with pytest.raises(CallbotError, match="Unknown scenario"):
        campaigns.create("no_such", gbk)
    with pytest.raises(CallbotError, match="HH:MM-HH:MM"):
        campaigns.create("ipo_allotment_notice", gbk, window="20:00-09:00")


def test_dialer_respects_concurrency_retries_with_back_off_and_finishes(campaigns: Campaigns, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(IPO_HEADER + ipo_row("张三", "13800001111") + ipo_row("李四", "13800002222") + ipo_row("王五", "13800003333"))
    made = campaigns.create("ipo_allotment_notice", path, concurrency=2, retries=1, retry_after="10m")
    calls = ScriptedCalls({"13800001111": ["confirmed"], "13800002222": ["busy", "no_answer"], "13800003333": ["no_answer", "refused"]})
    dialer = Dialer(campaigns, calls, "w1")
    noon = datetime(2026, 12, 2, 4, 0)  # 12:00 in Shanghai, a Wednesday
    dialer.tick(noon)
    assert len(calls.placed) == 0, "a draft campaign is not dialled"
    campaigns.change(made["id"], "start")
    dialer.tick(noon)
    assert len(calls.placed) == 2 and calls.most_at_once == 2, "two at once, not three"
    dialer.tick(noon + timedelta(seconds=1))  # both end; the third is placed
    assert len(calls.placed) == 3
    dialer.tick(noon + timedelta(minutes=5))  # the third ends; the retries wait for their back-off
    assert len(calls.placed) == 3
    dialer.tick(noon + timedelta(minutes=11))  # 10 min after the busy signal
    assert [c.phone for c in calls.placed[3:]] == ["13800002222"]
    dialer.tick(noon + timedelta(minutes=12))
    assert len(calls.placed) == 4, "the no-answer of minute 5 waits until minute 15"
    dialer.tick(noon + timedelta(minutes=16))
    assert [c.phone for c in calls.placed[3:]] == ["13800002222", "13800003333"]
    dialer.tick(noon + timedelta(minutes=17))
    status = campaigns.status(made["id"])[0]
    assert status["status"] == "done" and status["contacts"] == {"done": 2, "failed": 1}
    report = campaigns.report(made["id"])
    assert report["attempts"] == 5 and report["by_outcome"] == {"confirmed": 1, "no_answer": 1, "refused": 1}
    assert report["answered"] == 2 and report["success_rate"] == 0.5


def test_outside_the_window_nothing_is_dialled(campaigns: Campaigns, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(IPO_HEADER + ipo_row("张三", "13800001111"))
    made = campaigns.create("ipo_allotment_notice", path, window="09:00-20:00", weekdays="1-5")
    campaigns.change(made["id"], "start")
    calls = ScriptedCalls({"13800001111": ["confirmed"]})
    dialer = Dialer(campaigns, calls, "w1")
    dialer.tick(datetime(2026, 12, 2, 13, 0))  # 21:00 in Shanghai
    dialer.tick(datetime(2026, 12, 5, 4, 0))  # a Saturday noon
    assert not calls.placed
    dialer.tick(datetime(2026, 12, 7, 1, 30))  # Monday 09:30
    assert len(calls.placed) == 1


def test_a_restart_settles_the_calls_a_crash_left_and_never_calls_a_finished_customer_again(
        campaigns: Campaigns, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(IPO_HEADER + ipo_row("张三", "13800001111") + ipo_row("李四", "13800002222"))
    made = campaigns.create("ipo_allotment_notice", path, retries=1, retry_after="1m")
    campaigns.change(made["id"], "start")
    first = ScriptedCalls({"13800001111": [], "13800002222": []})
    noon = datetime(2026, 12, 2, 4, 0)
    Dialer(campaigns, first, "w1").tick(noon)  # both placed; then the process dies
    assert len(first.placed) == 2
    finished = next(c for c in first.placed if c.phone == "13800001111")
    with campaigns.store.session() as s:  # that call went on and recorded its outcome before the crash
        s.add(Conversation(external_id=finished.call_id, channel="voice", outcome=Outcome.confirmed))
    again = ScriptedCalls({"13800002222": ["confirmed"]})
    restarted = Dialer(campaigns, again, "w1")
    # The restart a minute later; its clock, not the wall clock, dates the retry (the test once passed only
    # before 04:00 UTC on 2026-12-02, when the wall clock was still earlier than this made-up noon).
    assert restarted.recover(noon + timedelta(minutes=1)) == 2
    restarted.tick(noon + timedelta(minutes=2))
    restarted.tick(noon + timedelta(minutes=3))
    assert [c.phone for c in again.placed] == ["13800002222"], "only the call with no outcome is placed again"
    with campaigns.store.session() as s:
        outcomes = sorted((a.call_id, a.outcome) for a in s.scalars(select(CallAttempt)))
    assert [o for _c, o in outcomes] == ["confirmed", "dropped", "confirmed"]
    assert campaigns.status(made["id"])[0]["contacts"] == {"done": 2}


def test_export_masks_phones_and_neutralises_formulas(campaigns: Campaigns, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(IPO_HEADER + ipo_row('"=HYPERLINK(""http://x"")"', "13800001111"))
    made = campaigns.create("ipo_allotment_notice", path)
    exported = campaigns.export_csv(made["id"])
    assert "138****1111" in exported and "13800001111" not in exported
    assert "'=HYPERLINK" in exported


@pytest.mark.postgres
def test_dialers_sharing_a_campaign_on_postgresql_never_take_one_contact_twice(postgres_url: str, demo_file: Path,
                                                                               tmp_path: Path) -> None:
    import threading

    from sqlalchemy import create_engine, text

    from knowledge_base.db import Store
    from knowledge_base.service import KnowledgeBase

    # A database of its own: the server is shared with tests that count what is in theirs.
    server = postgres_url.rsplit("/", 1)[0]
    admin = create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS campaign_claims"))
        conn.execute(text("CREATE DATABASE campaign_claims"))
    admin.dispose()
    store = Store(server + "/campaign_claims")
    store.migrate()
    try:
        KnowledgeBase(store).import_files([demo_file])
        path = tmp_path / "c.csv"
        path.write_text(IPO_HEADER + "".join(ipo_row(f"客户{n}", f"1380000{n:04d}") for n in range(12)))
        service = Campaigns(store)
        made = service.create("ipo_allotment_notice", path, concurrency=5, window="00:00-24:00")
        service.change(made["id"], "start")
        campaign = next(c for c in service.running() if c.id == made["id"])
        claimed: list[list[Claim]] = [[] for _ in range(4)]

        def claim(n: int) -> None:
            claimed[n] = Campaigns(store).claim(campaign, f"w{n}", "scripted", datetime(2026, 12, 2, 4, 0), limit=3)

        threads = [threading.Thread(target=claim, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        contacts = [c.contact_id for batch in claimed for c in batch]
        assert len(contacts) == len(set(contacts)) == 5, "distinct contacts, and never above the campaign's five at once"
    finally:
        store.dispose()


def test_a_hundred_thousand_customers_stream_in_and_one_bad_line_writes_nothing(campaigns: Campaigns, tmp_path: Path) -> None:
    rows = [ipo_row(f"客户{i}", f"13{i:09d}") for i in range(100_000)]
    good = tmp_path / "big.csv"
    good.write_text(IPO_HEADER + "".join(rows), encoding="utf-8")
    seen: list[int] = []
    made = campaigns.create("ipo_allotment_notice", good, progress=seen.append)
    assert made["contacts"] == 100_000
    assert seen[-1] == good.stat().st_size and len(seen) > 10 and seen == sorted(seen), "progress grows to the file size"
    with campaigns.store.session() as s:
        last = s.scalar(select(CampaignContact).where(CampaignContact.campaign_id == made["id"]).order_by(CampaignContact.id.desc()))
        assert last.source_line == 100_001 and last.phone == "13000099999" and last.status == "pending"
        assert last.variables["amount"] == "16350.00"
    # The same file with one bad line near its end (GBK this time): rejected whole, the line named.
    rows[99_990] = ipo_row("坏行", "1380000")
    bad = tmp_path / "big-gbk.csv"
    bad.write_bytes((IPO_HEADER + "".join(rows)).encode("gbk"))
    with pytest.raises(CustomerFileError) as err:
        campaigns.create("ipo_allotment_notice", bad)
    assert err.value.problems == ["line 99992: bad phone number '1380000'"]
    with campaigns.store.session() as s:
        assert s.scalar(select(func.count(Campaign.id))) == 1
        assert s.scalar(select(func.count(CampaignContact.id))) == 100_000


def test_a_customer_who_asks_not_to_be_called_is_never_dialled_again_by_any_campaign(campaigns: Campaigns, tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(IPO_HEADER + ipo_row("张三", "13800001111"))
    second.write_text(IPO_HEADER + ipo_row("张三", "13800001111") + ipo_row("李四", "13800002222"))
    a = campaigns.create("ipo_allotment_notice", first)
    b = campaigns.create("ipo_allotment_notice", second)  # created before the request: the number is still in it
    campaigns.change(a["id"], "start")
    calls = ScriptedCalls({"13800001111": ["do_not_call"], "13800002222": ["confirmed"]})
    dialer = Dialer(campaigns, calls, "w1")
    noon = datetime(2026, 12, 2, 4, 0)
    dialer.tick(noon)
    dialer.tick(noon + timedelta(seconds=1))
    assert campaigns.status(a["id"])[0]["contacts"] == {"done": 1}
    assert campaigns.report(a["id"])["by_outcome"] == {"do_not_call": 1}
    campaigns.change(b["id"], "start")
    dialer.tick(noon + timedelta(seconds=2))
    dialer.tick(noon + timedelta(seconds=3))
    assert [c.phone for c in calls.placed] == ["13800001111", "13800002222"], "the second campaign skipped the number"
    assert campaigns.status(b["id"])[0]["contacts"] == {"skipped": 1, "done": 1}
    with pytest.raises(CustomerFileError, match="line 2: the number is on the do-not-call list"):
        campaigns.create("ipo_allotment_notice", first)


def test_a_callback_is_dialled_at_the_time_the_customer_named_on_the_campaigns_clock(campaigns: Campaigns, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(IPO_HEADER + ipo_row("张三", "13800001111") + ipo_row("李四", "13800002222") + ipo_row("王五", "13800003333"))
    made = campaigns.create("ipo_allotment_notice", path, retries=2, retry_after="3h")
    campaigns.change(made["id"], "start")
    calls = ScriptedCalls({"13800001111": ["callback", "confirmed"], "13800002222": ["callback", "confirmed"],
                           "13800003333": ["callback", "confirmed"]})
    dialer = Dialer(campaigns, calls, "w1")
    noon = datetime(2026, 12, 2, 4, 0)  # 12:00 in Shanghai, a Wednesday
    dialer.tick(noon)
    assert all(c.variables["timezone"] == "Asia/Shanghai" for c in calls.placed), "the call reads times on the campaign's clock"
    said = {"13800001111": "两点以后再打吧", "13800002222": "下周一上午十点", "13800003333": "改天吧"}
    with campaigns.store.session() as s:  # what each call recorded (the script asked twice when no time was said)
        for claim in calls.placed:
            s.add(Conversation(external_id=claim.call_id, channel="voice", outcome=Outcome.callback,
                               outcome_detail={"callback_time": said[claim.phone]}))
    dialer.tick(noon + timedelta(seconds=1))
    with campaigns.store.session() as s:
        due = {c.phone: c.next_attempt_at for c in s.scalars(select(CampaignContact))}
    assert due["13800001111"] == datetime(2026, 12, 2, 6, 0), "两点 said at noon is 14:00 Shanghai, not 02:00"
    assert due["13800002222"] == datetime(2026, 12, 7, 2, 0), "next Monday 10:00 Shanghai"
    assert due["13800003333"] == noon + timedelta(seconds=1) + timedelta(hours=3), "no time named: the back-off"
    dialer.tick(datetime(2026, 12, 2, 5, 59))
    assert len(calls.placed) == 3
    dialer.tick(datetime(2026, 12, 2, 6, 0, 30))
    assert [c.phone for c in calls.placed[3:]] == ["13800001111"]
    dialer.tick(datetime(2026, 12, 2, 7, 1))  # 15:01: the back-off of 改天吧 is due
    assert [c.phone for c in calls.placed[3:]] == ["13800001111", "13800003333"]
    dialer.tick(datetime(2026, 12, 7, 1, 59))
    assert len(calls.placed) == 5
    dialer.tick(datetime(2026, 12, 7, 2, 0, 30))
    assert calls.placed[-1].phone == "13800002222"


def test_the_text_driver_times_out_silence_not_a_conversation_still_going(campaigns: Campaigns) -> None:
    from campaigns.drivers import TextDriver
    from knowledge_base.models import ConversationTurn

    def claim(call_id: str) -> Claim:
        return Claim(0, 0, 0, call_id, "ipo_allotment_notice", "张先生", "13900000001", {})

    with campaigns.store.session() as s:
        talking = Conversation(external_id="text-talking", channel="outbound")
        s.add_all([talking, Conversation(external_id="text-silent", channel="outbound")])
        s.flush()
        s.add_all([ConversationTurn(conversation_id=talking.id, seq=0, speaker="bot", text="您好，请问是张先生吗？"),
                   ConversationTurn(conversation_id=talking.id, seq=1, speaker="user", text="是我")])
    driver = TextDriver("http://127.0.0.1:9", campaigns, answer_timeout_s=0.0, abandoned_after_s=3600.0)
    assert driver.outcome(claim("text-silent")) == "no_answer", "no reply within the answer time-out"
    assert driver.outcome(claim("text-talking")) is None, "the customer replied: the call goes on past the answer time-out"
    assert campaigns.call_progress("text-talking") == (None, True)
    gone = TextDriver("http://127.0.0.1:9", campaigns, answer_timeout_s=0.0, abandoned_after_s=0.0)
    assert gone.outcome(claim("text-talking")) == "dropped", "replied, then left without an outcome: retried"
    with campaigns.store.session() as s:
        s.scalar(select(Conversation).where(Conversation.external_id == "text-talking")).outcome = Outcome.confirmed
    assert gone.outcome(claim("text-talking")) == "confirmed"


def test_a_scenario_deleted_while_its_campaign_runs_stops_it_and_keeps_every_record(
        campaigns: Campaigns, kb, demo_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from knowledge_base.errors import NotFound

    path = tmp_path / "c.csv"
    path.write_text(IPO_HEADER + ipo_row("张三", "13800001111") + ipo_row("李四", "13800002222") + ipo_row("王五", "13800003333"))
    running = campaigns.create("ipo_allotment_notice", path, concurrency=1)
    paused = campaigns.create("ipo_allotment_notice", path)
    other = campaigns.create("risk_assessment_expiry", _risk_file(tmp_path))
    for made in (running, paused, other):
        campaigns.change(made["id"], "start")
    campaigns.change(paused["id"], "pause")
    calls = ScriptedCalls({"13800001111": ["dropped"], "13800002222": [], "13800003333": [], "13800004444": ["confirmed"]})
    dialer = Dialer(campaigns, calls, "w1")
    noon = datetime(2026, 12, 2, 4, 0)
    dialer.tick(noon)
    in_flight = [c for c in calls.placed if c.campaign_id == running["id"]]
    assert len(in_flight) == 1, "one call of the running campaign is on when the scenario goes"
    with campaigns.store.session() as s:  # the call recorded itself under its scenario
        s.add(Conversation(external_id=in_flight[0].call_id, channel="outbound",
                           scenario_id=s.scalar(select(Campaign.scenario_id).where(Campaign.id == running["id"]))))

    before = kb.counts()
    done = kb.delete_scenario("ipo_allotment_notice", "editor-wang")
    after = kb.counts()
    assert after.scenarios == before.scenarios - 1 and after.intents < before.intents
    assert after.extension_questions < before.extension_questions and after.faq_intents == before.faq_intents
    assert sorted(done["stopped_campaigns"]) == sorted([running["id"], paused["id"]])
    for made in (running, paused):
        status = campaigns.status(made["id"])[0]
        assert status["status"] == "stopped" and "ipo_allotment_notice" in status["note"] and "editor-wang" in status["note"]
    assert campaigns.status(other["id"])[0]["status"] == "running", "another scenario's campaign goes on"

    dialer.tick(noon + timedelta(seconds=1))  # the call in flight ends and is recorded; nothing new is placed
    placed = [c for c in calls.placed if c.campaign_id == running["id"]]
    assert placed == in_flight
    with campaigns.store.session() as s:
        assert s.scalar(select(CallAttempt.outcome).where(CallAttempt.call_id == in_flight[0].call_id)) == "dropped"
        conv = s.scalar(select(Conversation).where(Conversation.external_id == in_flight[0].call_id))
        assert conv is not None and conv.scenario_id is not None, "the recorded call keeps its scenario"
    assert campaigns.report(running["id"])["attempts"] == 1
    with pytest.raises(CallbotError, match="stopped: its scenario ipo_allotment_notice was deleted"):
        campaigns.change(running["id"], "resume")
    with pytest.raises(CallbotError, match="Unknown scenario 'ipo_allotment_notice'"):
        campaigns.create("ipo_allotment_notice", path)
    assert "ipo_allotment_notice" not in {sc["code"] for sc in kb.scenarios()}
    assert "ipo_allotment_notice" not in kb.export("yaml")
    with pytest.raises(NotFound, match="was deleted on .* by editor-wang"):
        kb.intents("ipo_allotment_notice")
    with pytest.raises(NotFound):
        kb.delete_scenario("ipo_allotment_notice", "editor-wang")
    with pytest.raises(CallbotError, match="inbound FAQ domain"):
        kb.delete_scenario(next(sc["code"] for sc in kb.scenarios() if sc["kind"] == "inbound"), "editor-wang")

    kb.import_files([demo_file])  # importing it again restores the scenario, not the stopped campaign
    assert "ipo_allotment_notice" in {sc["code"] for sc in kb.scenarios()} and kb.counts().intents == before.intents
    assert campaigns.status(running["id"])[0]["status"] == "stopped"
    assert campaigns.create("ipo_allotment_notice", path)["contacts"] == 3


def _risk_file(tmp_path: Path) -> Path:
    path = tmp_path / "risk.csv"
    path.write_text("name,phone,expiry_date,risk_level\n赵六,13800004444,12月31日,C3\n", encoding="utf-8")
    return path
