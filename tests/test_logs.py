"""Logs never carry a full phone number or resident ID number."""

from __future__ import annotations

import json
import logging

from callbot.logs import JsonFormatter, mask_sensitive


def test_phone_and_id_numbers_are_masked() -> None:
    text = "客户13812345678，身份证110101199003071234，座机021-12345678，金额1000000元"
    masked = mask_sensitive(text)
    assert "13812345678" not in masked and "138****5678" in masked
    assert "110101199003071234" not in masked and "110101********1234" in masked
    assert "1000000" in masked  # ordinary numbers stay


def test_json_log_lines_are_masked() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "calling %s", ("13900001111",), None)
    record.fields = {"phone": "13900001111", "scenario": "ipo"}
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "calling 139****1111" and line["phone"] == "139****1111" and line["scenario"] == "ipo"
