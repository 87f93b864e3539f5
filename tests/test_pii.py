"""Personal numbers masked however they are written (callbot.pii); what flows need is left alone."""

from __future__ import annotations

import pytest

from callbot.pii import classify, luhn_valid, mask_sensitive


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+8613812345678", "138****5678"),
        ("+86 138 1234 5678", "138****5678"),
        ("0086-138-1234-5678", "138****5678"),
        ("138-1234-5678", "138****5678"),
        ("138 1234 5678", "138****5678"),
        ("１３８１２３４５６７８", "138****5678"),
        ("我手机号一三八一二三四五六七八", "我手机号138****5678"),
        ("幺三八幺二三四五六七八", "138****5678"),
        ("一三八 一二三四 五六七八", "138****5678"),
        ("身份证11010519491231002X", "身份证110105********002X"),
        ("老身份证110105491231002", "老身份证110105*****1002"),
        ("卡号6222021234567890128", "卡号***************0128"),
        ("4111 1111 1111 1111", "************1111"),
        ("13812345678 13912345678", "138****5678 139****5678"),
        ("13812345678XX证券", "138****5678XX证券"),
    ],
)
def test_personal_numbers_are_masked_keeping_the_last_four(text: str, masked: str) -> None:
    assert mask_sensitive(text) == masked


@pytest.mark.parametrize(
    "text",
    ["明天下午三点以后吧", "下周一上午十点", "要交12,345.00元", "股票代码688001", "中了500股", "一二三四五六七八九十",
     "客服热线95555", "座机021-12345678", "2026年12月1日", "", "XX证券"],
)
def test_what_a_flow_needs_is_left_alone(text: str) -> None:
    assert mask_sensitive(text) == text


def test_classify_and_luhn() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert classify("13812345678") == "mobile" and classify("8613812345678") == "mobile"
    assert classify("11010519491231002X") == "id"
    assert classify("4111111111111112") == "bank_card", "a misheard card number is still somebody's card"
    assert classify("12345678901") is None  # 11 digits, not a mobile
