"""The campaigns' staff API through the real web app (`python -m callbot.webapp`): create from an upload, lifecycle,
report, export, chart, do-not-call, and the errors a staff member sees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import as_staff, demo_webapp_env, running_webapp


class StaffClient:
    """httpx with the admin token of the web app the URL belongs to (tests/test_auth.py checks anonymous refusals)."""

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return httpx.get(url, headers=as_staff(url), **kwargs)  # type: ignore[arg-type]

    def post(self, url: str, **kwargs: object) -> httpx.Response:
        return httpx.post(url, headers=as_staff(url), **kwargs)  # type: ignore[arg-type]


staff = StaffClient()
IPO_HEADER = "name,phone,stock_name,stock_code,allotted_shares,amount,pay_deadline\n"


def ipo_row(name: str, phone: str) -> str:
    return f"{name},{phone},华源科技,688001,500,16350.00,12月3日\n"


@pytest.fixture(scope="module")
def web(e5_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_webapp(demo_webapp_env(tmp_path_factory, e5_model_dir, "campaign-api")) as url:
        yield url


def upload(web: str, body: bytes, **form: str) -> httpx.Response:
    return staff.post(web + "/campaigns/", files={"file": ("客户名单.csv", body, "text/csv")}, data=form, timeout=60)


def test_staff_create_run_and_report_a_campaign_over_http(web: str) -> None:
    csv_text = IPO_HEADER + ipo_row("张三", "13800001111") + ipo_row('"=HYPERLINK(""http://x"")"', "13800002222")
    made = upload(web, csv_text.encode("gbk"), scenario="ipo_allotment_notice", name="十二月中签通知", concurrency="2",
                  window="09:00-18:00", weekdays="1-5")
    assert made.status_code == 201, made.text
    cid = made.json()["id"]
    assert made.json()["contacts"] == 2
    listed = staff.get(web + "/campaigns/").json()["campaigns"]
    mine = next(c for c in listed if c["id"] == cid)
    assert mine["status"] == "draft" and mine["concurrency"] == 2 and mine["window"].startswith("09:00-18:00")
    assert mine["contacts"] == {"pending": 2}
    assert staff.post(web + f"/campaigns/{cid}/start").json() == {"id": cid, "status": "running"}
    refused = staff.post(web + f"/campaigns/{cid}/resume")
    assert refused.status_code == 409 and "cannot resume" in refused.json()["error"]
    assert staff.post(web + f"/campaigns/{cid}/pause").json()["status"] == "paused"
    report = staff.get(web + f"/campaigns/{cid}/report").json()
    assert report["contacts"] == 2 and report["attempts"] == 0 and report["success_rate"] is None
    export = staff.get(web + f"/campaigns/{cid}/export.csv")
    assert export.headers["content-type"].startswith("text/csv") and "attachment" in export.headers["content-disposition"]
    assert "138****1111" in export.text and "13800001111" not in export.text and "'=HYPERLINK" in export.text
    chart = staff.get(web + f"/campaigns/{cid}/chart.png")
    assert chart.status_code == 200 and chart.content[:8] == b"\x89PNG\r\n\x1a\n" and len(chart.content) > 5000


def test_a_bad_upload_is_refused_with_every_line_and_nothing_is_created(web: str) -> None:
    before = len(staff.get(web + "/campaigns/").json()["campaigns"])
    bad = upload(web, (IPO_HEADER + ipo_row("张三", "12345") + ipo_row("李四", "13800003333") + ipo_row("王五", "13800003333")).encode(),
                 scenario="ipo_allotment_notice")
    assert bad.status_code == 422
    assert bad.json()["problems"] == ["line 2: bad phone number '12345'", "line 4: duplicate of line 3 (138****3333)"]
    assert "/tmp" not in bad.text, "the server's temporary path is not shown"
    for body, form, says in ((b"\x00\x01binary", {"scenario": "ipo_allotment_notice"}, "binary file"),
                             (IPO_HEADER.encode(), {"scenario": "nope"}, "Unknown scenario 'nope'"),
                             (IPO_HEADER.encode(), {"scenario": "ipo_allotment_notice", "concurrency": "lots"}, "whole number"),
                             (IPO_HEADER.encode(), {"scenario": "ipo_allotment_notice", "window": "20:00-09:00"}, "start before the end")):
        r = upload(web, body, **form)
        assert r.status_code == 400 and says in r.json()["error"], r.text
    missing = staff.post(web + "/campaigns/", data={"scenario": "ipo_allotment_notice"})
    assert missing.status_code == 400 and "multipart form" in missing.json()["error"]
    assert len(staff.get(web + "/campaigns/").json()["campaigns"]) == before
    assert staff.get(web + "/campaigns/99999/report").status_code == 404
    assert staff.post(web + "/campaigns/1/explode").status_code == 404


def test_a_number_added_to_do_not_call_is_refused_in_the_next_upload(web: str) -> None:
    added = staff.post(web + "/campaigns/do-not-call", json={"phone": "+86 139-0000-7777", "reason": "投诉后要求"})
    assert added.status_code == 201 and added.json()["phone"] == "139****7777"
    assert staff.post(web + "/campaigns/do-not-call", json={"phone": "777"}).status_code == 400
    r = upload(web, (IPO_HEADER + ipo_row("赵六", "13900007777")).encode(), scenario="ipo_allotment_notice")
    assert r.status_code == 422 and r.json()["problems"] == ["line 2: the number is on the do-not-call list"]
