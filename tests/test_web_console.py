"""The web pages end to end in a real headless Chromium, against the running product (web app, Rasa, actions):
the embedded widget on the demo page, the reviewer's expansion review and Try it, a hand-over picked up at the
agent desk, role and sign-in refusals, and markup typed by customers, editors and agents staying inert.

Screenshots of the main screens go to var/screenshots/ (CALLBOT_SCREENSHOTS overrides; never committed)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser import chromium, sign_in
from tests.conftest import ROOT, create_staff, http

PASSWORD = "console passphrase 1"
XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
SHOTS = Path(os.environ.get("CALLBOT_SCREENSHOTS", ROOT / "var" / "screenshots"))


def shot(driver, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


@pytest.fixture(scope="module")
def product(dialogue_product: dict[str, Any]) -> dict[str, Any]:
    for username, role in (("rev.e2e", "reviewer"), ("agent.e2e", "agent"), ("editor.e2e", "editor")):
        create_staff(dialogue_product["env"], username, role, PASSWORD)
    return dialogue_product


def kept_answers(env: dict[str, str], username: str) -> int:
    """How many of ``username``'s keyed writes have a stored answer (callbot/auth/idempotency.py); 0 when none."""
    from sqlalchemy import text

    from callbot.settings import Settings
    from knowledge_base.db import Store

    store = Store(Settings(home=Path(env["CALLBOT_HOME"]), database_url=env.get("CALLBOT_DATABASE_URL", "")).db_url)
    try:
        with store.engine.connect() as conn:
            statuses = conn.execute(text("SELECT response_status FROM idempotent_request WHERE principal = :u"),
                                    {"u": username}).scalars().all()
    finally:
        store.dispose()
    assert all(s is not None and s < 300 for s in statuses), statuses
    return len(statuses)


# ------------------------------------------------------------------ the customer's widget
def widget(driver):  # type: ignore[no-untyped-def]
    return driver.execute_script("return document.getElementById('callbot-widget').shadowRoot")


def bubbles(driver, kind: str) -> list[str]:  # type: ignore[no-untyped-def]
    return driver.execute_script(
        "const h = document.getElementById('callbot-widget');"
        f"return h ? [...h.shadowRoot.querySelectorAll('.m.{kind}')].map(e => e.textContent) : [];")


def open_widget(driver, url: str) -> None:  # type: ignore[no-untyped-def]
    driver.get(url + "/")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return !!document.getElementById('callbot-widget')"))
    if widget(driver).find_element(By.CSS_SELECTOR, ".panel").get_attribute("hidden") is not None:
        widget(driver).find_element(By.CSS_SELECTOR, ".launcher").click()


def say(driver, text: str) -> None:  # type: ignore[no-untyped-def]
    widget(driver).find_element(By.CSS_SELECTOR, "input.text").send_keys(text, Keys.ENTER)


def test_customer_chats_in_the_embedded_widget_and_keeps_the_history_after_a_reload(product: dict[str, Any]) -> None:
    with chromium() as customer:
        wait = WebDriverWait(customer, 60)
        open_widget(customer, product["web"])
        wait.until(lambda d: any("请问有什么可以帮您" in t for t in bubbles(d, "bot")))
        assert bubbles(customer, "user") == [], "the widget's /greet is not shown as the customer's words"
        assert customer.execute_script("return typeof io") == "function", "socket.io-client loaded from the app"
        session = customer.execute_script("return localStorage.getItem('callbot_session_id')")
        assert session and session.startswith("web-")
        say(customer, "我想开个户怎么弄")
        wait.until(lambda d: len(bubbles(d, "bot")) >= 2)
        assert bubbles(customer, "bot")[1].startswith("【") and "开户" in bubbles(customer, "bot")[1]
        say(customer, XSS)
        wait.until(lambda d: len(bubbles(d, "bot")) >= 3)
        assert XSS in bubbles(customer, "user"), "shown as the text the customer typed"
        assert customer.execute_script("return window.__pwned") is None
        assert widget(customer).find_elements(By.CSS_SELECTOR, "img, script") == []
        # Neither page's nor widget's CSS reaches the other: the host page styles every button green and serif.
        host_button = customer.execute_script("return getComputedStyle(document.getElementById('host-button')).backgroundColor")
        send_button = customer.execute_script(
            "return getComputedStyle(document.getElementById('callbot-widget').shadowRoot.querySelector('.send')).backgroundColor")
        assert host_button == "rgb(22, 163, 74)" and send_button == "rgb(200, 16, 46)"
        shot(customer, "widget-demo-page")

        customer.refresh()
        open_widget(customer, product["web"])
        wait.until(lambda d: len(bubbles(d, "user")) >= 2)
        assert customer.execute_script("return localStorage.getItem('callbot_session_id')") == session
        assert bubbles(customer, "user") == ["我想开个户怎么弄", XSS], "the history comes back from the server"
        assert any("开户" in t for t in bubbles(customer, "bot"))
        time.sleep(1.0)
        assert bubbles(customer, "user") == ["我想开个户怎么弄", XSS], "no second greeting or replay after a reload"

        customer.set_window_size(390, 780)  # a phone: the panel fills the screen
        width = customer.execute_script(
            "return document.getElementById('callbot-widget').shadowRoot.querySelector('.panel').getBoundingClientRect().width")
        assert width >= 370
        shot(customer, "widget-phone")


def open_intent(browser, wait, url: str, username: str, intent_id: int) -> None:  # type: ignore[no-untyped-def]
    """Sign in to the console and open an FAQ intent."""
    sign_in(browser, url, username, PASSWORD)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#sc option[value=faq]"))
    Select(browser.find_element(By.ID, "sc")).select_by_value("faq")
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f".it[data-id='{intent_id}']"))[0].click()


def test_a_reviewer_expands_an_intent_approves_two_candidates_and_finds_them_in_try_it(product: dict[str, Any]) -> None:
    url = product["web"]
    status, intents = http("GET", url + "/kb/scenarios/faq/intents")
    assert status == 200, intents
    target = next(i for i in intents if i["name"] == "faq_close_account")
    new_wording = "请问销户的手续具体要怎么走才行"
    with chromium() as browser:
        wait = WebDriverWait(browser, 300, ignored_exceptions=(StaleElementReferenceException,))
        open_intent(browser, wait, url, "rev.e2e", target["id"])
        wait.until(lambda b: b.find_element(By.ID, "std").text == "标准问：" + target["standard_question"])
        assert browser.find_element(By.ID, "answer-edit").get_attribute("hidden") is not None, "a reviewer cannot edit answers"
        n = browser.find_element(By.ID, "n")
        n.clear()
        n.send_keys("4")
        browser.find_element(By.ID, "expand").click()
        wait.until(lambda b: "新增待审核" in b.find_element(By.ID, "gen-msg").text)
        rows = [r for r in browser.find_elements(By.CSS_SELECTOR, "#gen-rows tr") if r.get_attribute("data-qid")]
        assert len(rows) >= 2, "at least two new candidates to review"
        edited = rows[0].find_element(By.CSS_SELECTOR, "input.cand")
        edited.clear()
        edited.send_keys(new_wording)  # corrected before approving
        second_text = rows[1].find_element(By.CSS_SELECTOR, "input.cand").get_attribute("value")
        for row in rows[:2]:
            row.find_element(By.CSS_SELECTOR, "input.pick").click()
        shot(browser, "console-expand-review")
        browser.find_element(By.ID, "gen-approve").click()
        wait.until(lambda b: "已通过 2 条" in b.find_element(By.ID, "gen-review-msg").text)
        _, after = http("GET", url + f"/kb/intents/{target['id']}")
        by_text = {q["text"]: q for q in after["extension_questions"]}
        assert by_text[new_wording]["status"] == "approved" and by_text[new_wording]["reviewed_by"] == "rev.e2e"
        assert by_text[second_text]["status"] == "approved"
        # The console sent each change with its own Idempotency-Key; the answers are kept for a resend.
        assert kept_answers(product["env"], "rev.e2e") >= 2

        # Try it: the approved wording is live without a restart.
        browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=try]").click()
        browser.find_element(By.ID, "try-text").send_keys(new_wording)
        Select(browser.find_element(By.ID, "try-sc")).select_by_value("faq")
        def top_row(b):  # type: ignore[no-untyped-def]
            rows = b.find_elements(By.CSS_SELECTOR, "#try-rows tr")
            return [td.text for td in rows[0].find_elements(By.TAG_NAME, "td")] if rows else []

        deadline = time.monotonic() + 30  # the matcher re-indexes on the new KB version in the background
        while True:
            browser.execute_script("document.getElementById('try-rows').innerHTML = ''")
            browser.find_element(By.ID, "try-go").click()
            cells = wait.until(top_row)
            if cells[3] == new_wording or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert cells[1] == "faq/faq_close_account" and cells[3] == new_wording, cells
        assert "判定：match" in browser.find_element(By.ID, "try-decision").text
        shot(browser, "console-try-it")

        # Role limits: a reviewer does not see the admin page, and is refused when opening it.
        browser.get(url + "/admin/users")
        assert wait.until(lambda b: b.find_element(By.ID, "forbidden")).text.startswith("无权限")
        browser.get(url + "/admin")
        wait.until(lambda b: b.find_elements(By.ID, "who"))
        assert "用户与审计" not in browser.find_element(By.ID, "staff-bar").text
        for tab in ("unmatched", "convs", "dashboard"):
            browser.find_element(By.CSS_SELECTOR, f"#tabs button[data-tab={tab}]").click()
            time.sleep(1.5)
            shot(browser, f"console-{tab}")
        # Signing out ends the session: the console sends the browser back to the sign-in page.
        browser.find_element(By.ID, "logout").click()
        wait.until(lambda b: "/login" in b.current_url)
        browser.get(url + "/admin")
        wait.until(lambda b: "/login?next=/admin" in b.current_url)


def test_a_logged_out_browser_is_sent_to_the_login_page(product: dict[str, Any]) -> None:
    with chromium() as browser:
        for page in ("/admin", "/desk", "/admin/users"):
            browser.get(product["web"] + page)
            WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.ID, "username"))
            assert browser.current_url.endswith("/login?next=" + page)
        shot(browser, "login")
        browser.find_element(By.ID, "username").send_keys("rev.e2e")
        browser.find_element(By.ID, "password").send_keys("not the password")
        browser.find_element(By.ID, "sign-in").click()
        WebDriverWait(browser, 20).until(lambda b: "错误" in b.find_element(By.ID, "error").text)


def test_kb_text_with_markup_is_shown_as_text_in_the_console(product: dict[str, Any]) -> None:
    url = product["web"]
    _, intents = http("GET", url + "/kb/scenarios/faq/intents")
    target = intents[2]
    status, added = http("POST", url + f"/kb/intents/{target['id']}/questions", {"text": "销户" + XSS[:60]})
    assert status == 201, added
    with chromium() as browser:
        wait = WebDriverWait(browser, 120, ignored_exceptions=(StaleElementReferenceException,))
        open_intent(browser, wait, url, "editor.e2e", target["id"])
        wait.until(lambda b: any(added["text"] == td.text for td in b.find_elements(By.CSS_SELECTOR, "#qs td")))
        assert browser.find_elements(By.CSS_SELECTOR, "#qs img, #qs script") == []
        assert browser.execute_script("return window.__pwned") is None
        browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=search]").click()
        browser.find_element(By.ID, "s-q").send_keys("onerror")
        browser.find_element(By.CSS_SELECTOR, "#s-form button").click()
        wait.until(lambda b: any(added["text"] == td.text for td in b.find_elements(By.CSS_SELECTOR, "#s-rows td")))
        assert browser.execute_script("return window.__pwned") is None

        # An editor rewording a script prompt: the compliance warning shows while typing; the save is refused.
        Select(browser.find_element(By.ID, "sc")).select_by_value("ipo_allotment_notice")
        browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=script]").click()
        step = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#steps .step"))[0]
        prompt = step.find_element(By.CSS_SELECTOR, "textarea.prompt")
        before = prompt.get_attribute("value")
        prompt.send_keys("这只新股保本保收益，稳赚不赔。")
        wait.until(lambda b: "合规提示" in step.find_element(By.CSS_SELECTOR, ".warn").text)
        step.find_element(By.CSS_SELECTOR, "button.save").click()
        wait.until(lambda b: "compliance guard" in step.find_element(By.CSS_SELECTOR, ".msg").text)
        shot(browser, "console-script-warning")
        _, steps = http("GET", url + "/kb/scenarios/ipo_allotment_notice/steps")
        assert steps[0]["prompt"] == before, "nothing was published"


def test_a_handed_over_chat_is_picked_up_at_the_agent_desk_and_the_customer_sees_the_reply(product: dict[str, Any]) -> None:
    url = product["web"]
    with chromium() as customer, chromium() as agent:
        wait = WebDriverWait(customer, 60)
        open_widget(customer, url)
        wait.until(lambda d: bubbles(d, "bot"))
        session = customer.execute_script("return localStorage.getItem('callbot_session_id')")
        say(customer, "转人工")
        wait.until(lambda d: bubbles(d, "sys"))
        assert "人工客服队列" in bubbles(customer, "sys")[0]
        bot_lines = len(bubbles(customer, "bot"))

        sign_in(agent, url, "agent.e2e", PASSWORD, then="/desk")
        desk = WebDriverWait(agent, 60, ignored_exceptions=(StaleElementReferenceException,))
        mine = desk.until(lambda a: [h for h in a.find_elements(By.CSS_SELECTOR, "#handovers .h") if "等待中" in h.text])
        mine[-1].click()
        desk.until(lambda a: a.find_element(By.ID, "reply").is_displayed())
        desk.until(lambda a: any("转人工" in m.text for m in a.find_elements(By.CSS_SELECTOR, "#lines .m.user")))
        wait.until(lambda d: any("已接入" in t for t in bubbles(d, "sys")))

        agent.find_element(By.ID, "reply-text").send_keys("您好，我是人工客服小王。" + XSS, Keys.ENTER)
        wait.until(lambda d: bubbles(d, "agent"))
        assert bubbles(customer, "agent")[0].endswith("您好，我是人工客服小王。" + XSS)
        assert customer.execute_script("return window.__pwned") is None
        assert widget(customer).find_elements(By.CSS_SELECTOR, "img, script") == []

        # Simple markdown becomes bold text and a link that opens apart; a javascript: link stays text.
        agent.find_element(By.ID, "reply-text").send_keys("请看**销户须知**：[官网](https://www.example.com/close) [x](javascript:alert(1))",
                                                          Keys.ENTER)
        wait.until(lambda d: len(bubbles(d, "agent")) >= 2)
        rich = widget(customer).find_elements(By.CSS_SELECTOR, ".m.agent")[-1]
        assert rich.find_element(By.TAG_NAME, "strong").text == "销户须知"
        links = rich.find_elements(By.TAG_NAME, "a")
        assert [(a.get_attribute("href"), a.get_attribute("target"), a.get_attribute("rel")) for a in links] == [
            ("https://www.example.com/close", "_blank", "noopener noreferrer")]
        assert "[x](javascript:alert(1))" in rich.text

        say(customer, "我想问一下销户的事")
        desk.until(lambda a: any("我想问一下销户的事" in m.text for m in a.find_elements(By.CSS_SELECTOR, "#lines .m.user")))
        time.sleep(1.5)
        assert len(bubbles(customer, "bot")) == bot_lines, "the bot stays silent while a person has the chat"
        shot(customer, "widget-agent-reply")
        shot(agent, "agent-desk")
        assert agent.execute_script("return window.__pwned") is None

        Select(agent.find_element(By.ID, "outcome")).select_by_value("resolved")
        agent.find_element(By.ID, "close-chat").click()
        desk.until(lambda a: "已结束" in a.find_element(By.ID, "desk-msg").text)
        wait.until(lambda d: any("结束本次服务" in t for t in bubbles(d, "sys")))
        say(customer, "我想开个户怎么弄")
        wait.until(lambda d: len(bubbles(d, "bot")) > bot_lines)  # the bot answers again

    status, record = http("GET", url + f"/conversations/{session}")
    assert status == 200 and record["handed_over"] and record["outcome_detail"]["agent_outcome"] == "resolved"
    speakers = [(t["speaker"], t["text"]) for t in record["turns"] if t["speaker"] in ("user", "agent")]
    assert ("agent", "您好，我是人工客服小王。" + XSS) in speakers and ("user", "我想问一下销户的事") in speakers
    status, queue = http("GET", url + "/desk/handovers?closed=5")
    closed = next(h for h in queue["closed"] if h["session_id"] == session)
    assert closed["agent"] == "agent.e2e" and closed["outcome"] == "resolved" and closed["wait_s"] >= 0


def test_the_widget_embeds_in_another_sites_page(product: dict[str, Any], tmp_path: Path) -> None:
    """A firm's own page on another origin with the one script tag: the widget opens, in English, and chats."""
    import subprocess
    import sys

    from tests.conftest import free_port

    url = product["web"]
    (tmp_path / "firm.html").write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Firm site</title>'
        '<style>*{font-size:40px!important;color:red!important}</style></head><body><h1>Example Securities</h1>'
        f'<script src="{url}/widget.js" data-server="{url}" data-lang="en" data-title="Example Securities"></script>'
        '</body></html>', encoding="utf-8")
    port = free_port()
    site = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with chromium() as visitor:
            wait = WebDriverWait(visitor, 60)
            for _ in range(50):
                visitor.get(f"http://127.0.0.1:{port}/firm.html")
                if visitor.execute_script("return !!document.querySelector('h1')"):
                    break
                time.sleep(0.2)
            wait.until(lambda d: d.execute_script("return !!document.getElementById('callbot-widget')"))
            launcher = widget(visitor).find_element(By.CSS_SELECTOR, ".launcher")
            assert launcher.text == "Chat with us"
            assert visitor.execute_script(  # the page's !important rules stop at the shadow root
                "return getComputedStyle(document.getElementById('callbot-widget').shadowRoot.querySelector('.launcher')).fontSize") == "13px"
            launcher.click()
            wait.until(lambda d: bubbles(d, "bot"))
            say(visitor, "我想开个户怎么弄")
            wait.until(lambda d: len(bubbles(d, "bot")) >= 2)
            assert "开户" in bubbles(visitor, "bot")[1]
            assert visitor.execute_script("return typeof io") == "function"
            shot(visitor, "widget-other-site")
    finally:
        site.terminate()
        site.wait(timeout=10)


def test_the_widget_uses_rest_without_socketio_and_retries_while_the_server_is_unreachable(product: dict[str, Any]) -> None:
    with chromium() as customer:
        wait = WebDriverWait(customer, 60)
        customer.execute_cdp_cmd("Network.enable", {})
        customer.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*socket.io*", "*/chat/send*"]})
        open_widget(customer, product["web"])
        status = lambda d: d.execute_script(  # noqa: E731
            "return document.getElementById('callbot-widget').shadowRoot.querySelector('.status').textContent")
        wait.until(lambda d: "正在重试" in status(d))  # the greeting could not be sent: said, and retried
        assert bubbles(customer, "bot") == []
        shot(customer, "widget-unreachable")
        customer.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*socket.io*"]})  # the server is back; socket.io not
        wait.until(lambda d: any("请问有什么可以帮您" in t for t in bubbles(d, "bot")))
        assert status(customer) == ""
        say(customer, "我想开个户怎么弄")
        wait.until(lambda d: len(bubbles(d, "bot")) >= 2)
        assert "开户" in bubbles(customer, "bot")[1]
        assert customer.execute_script("return typeof io") == "undefined", "the REST channel carried it"
