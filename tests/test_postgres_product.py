"""The whole product on PostgreSQL: web app + NLU, action server and Rasa with CALLBOT_DATABASE_URL pointing at a
PostgreSQL server the test starts — a chat, an outbound call and a KB edit the NLU sees, all read back from
PostgreSQL itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from knowledge_base.db import Store
from knowledge_base.models import Conversation, ConversationTurn
from tests.conftest import http, running_product

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def pg_product(tmp_path_factory: pytest.TempPathFactory, e5_model_dir: Path, postgres_url: str) -> Iterator[dict[str, Any]]:
    """A database of its own on the session's PostgreSQL server (the store tests use the default one)."""
    from sqlalchemy import create_engine, text

    admin = create_engine(postgres_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE callbot_product"))
    admin.dispose()
    url = postgres_url.rsplit("/", 1)[0] + "/callbot_product"
    yield from ({**product, "url": url} for product in running_product(tmp_path_factory, {"CALLBOT_DATABASE_URL": url}))


def test_chat_call_and_kb_edit_on_postgresql(pg_product: dict[str, Any]) -> None:
    web, rasa = pg_product["web"], pg_product["rasa"]
    assert not (pg_product["home"] / "callbot.db").exists(), "nothing went to the SQLite default"

    status, body = http("POST", web + "/chat/send", {"sender": "pg-chat-session", "message": "我想开个户怎么弄"})
    assert status == 200 and body["messages"][0]["text"].startswith("【") and "开户" in body["messages"][0]["text"]

    trigger = {"name": "EXTERNAL_start_call", "entities": {"scenario": "ipo_allotment_notice", "customer_name": "张先生",
               "variables": {"stock_name": "华安科技", "stock_code": "688001", "allotted_shares": 500, "amount": "12345.00",
                             "pay_deadline": "11月25日"}}}
    status, opening = http("POST", rasa + "/conversations/pg-call/trigger_intent?output_channel=latest", trigger)
    assert status == 200 and "张先生" in opening["messages"][0]["text"]
    for answer in ("是我", "好的知道了", "对", "好"):
        http("POST", rasa + "/webhooks/rest/webhook", {"sender": "pg-call", "message": answer})

    store = Store(pg_product["url"])
    try:
        with store.session() as s:
            call = s.scalar(select(Conversation).where(Conversation.external_id == "pg-call"))
            assert call is not None and call.outcome is not None and call.outcome.value == "confirmed" and call.ended_at
            chat_turns = s.scalars(select(ConversationTurn.text).join(Conversation)
                                   .where(Conversation.external_id == "pg-chat-session")).all()
            assert "我想开个户怎么弄" in chat_turns
        # A KB edit through the API reaches the NLU service without a restart.
        _, intents = http("GET", web + "/kb/scenarios/faq/intents")
        target = next(i for i in intents if i["name"] == "faq_reverse_repo_how_to")
        sentence = "放长假前闲钱放哪能生点利息"
        status, _ = http("POST", web + f"/kb/intents/{target['id']}/questions", {"text": sentence})
        assert status == 201
        deadline = time.monotonic() + 10
        while True:
            _, result = http("POST", web + "/nlu/parse", {"text": sentence, "scenario": "faq"})
            if result["matched"] and result["matched"]["question"] == sentence:
                break
            assert time.monotonic() < deadline, result["matched"]
            time.sleep(0.1)
        assert result["matched"]["intent"] == "faq_reverse_repo_how_to"
        assert store.kb_version() == result["kb_version"]
    finally:
        store.dispose()
