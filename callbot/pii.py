"""Masking personal numbers before anything is stored: mobile, resident ID and bank-card numbers.

The rule (docs/operations.md, "Personal numbers"): no full mobile, ID or card number is kept anywhere at
rest. Text is masked where it enters — the chat and voice channels inside Rasa, before Rasa's tracker store
sees it — and again wherever our own code writes text (conversation turns, outcome details, compliance notes,
follow-up notes, logs). What a flow legitimately needs stays: times, amounts, stock codes, and the last four
digits (for "尾号1234" verification).

Numbers are found however they are written: grouped (138 1234 5678, 138-1234-5678), with a country code
(+86 / 0086 / 86), in full-width digits, or read out in Chinese numerals digit by digit as an ASR transcript
writes them (一三八一二三四五六七八, 幺/洞/两 included). Masked forms use Arabic digits:
138****5678 (mobile), 110101********123X (ID: region and last four), ************1234 (card: last four).

Standard library only: Rasa's Python 3.10 environment imports this module too.
"""

from __future__ import annotations

import re

# A digit as people write or say it; 幺 (1), 洞 (0) and 两 (2) are how numbers are read out on the phone.
_DIGIT_CHARS = "0123456789０１２３４５６７８９零〇洞幺一二两三四五六七八九"
_DIGIT_VALUE = {c: str(i) for i, c in enumerate("0123456789")}
_DIGIT_VALUE.update({c: str(i) for i, c in enumerate("０１２３４５６７８９")})
_DIGIT_VALUE.update({"零": "0", "〇": "0", "洞": "0", "幺": "1", "一": "1", "二": "2", "两": "2", "三": "3", "四": "4",
                     "五": "5", "六": "6", "七": "7", "八": "8", "九": "9"})
_D = f"[{_DIGIT_CHARS}]"
# A run of digits, single spaces or hyphens between them allowed, an optional +86 / 0086 / 86 in front and an
# optional X at the end (the ID check character).
_RUN = re.compile(rf"(?:[+＋]\s?)?{_D}(?:[ \t\-－]?{_D})*(?:[Xx])?")
_MOBILE = re.compile(r"^(?:0{0,2}86)?(1[3-9]\d)\d{4}(\d{4})$")
_ID = re.compile(r"^(\d{6})(\d{8}|\d{6})(\d{3}[\dXx]|\d{1})$")
_MIN_DIGITS = 11


def luhn_valid(digits: str) -> bool:
    """The bank-card checksum (ISO/IEC 7812)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def classify(digits: str) -> str | None:
    """mobile | id | bank_card | None for a run of plain digits (an X may end an ID)."""
    if _MOBILE.match(digits):
        return "mobile"
    if len(digits) in (15, 18) and _ID.match(digits):
        return "id"
    if 16 <= len(digits) <= 19 and digits.isdigit():
        # Luhn-valid runs are cards; a run that fails the checksum is masked all the same: one digit misheard
        # by ASR breaks the checksum and leaves fifteen true digits of somebody's card.
        return "bank_card"
    return None


def _masked(digits: str, kind: str) -> str:
    if kind == "mobile":
        m = _MOBILE.match(digits)
        assert m is not None
        return f"{m.group(1)}****{m.group(2)}"
    if kind == "id":
        return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]
    return "*" * (len(digits) - 4) + digits[-4:]


def _mask_run(run: str) -> str:
    digits = "".join(_DIGIT_VALUE.get(c, c.upper() if c in "Xx" else "") for c in run)
    if len(digits.rstrip("X")) < _MIN_DIGITS:
        return run
    kind = classify(digits)
    if kind is not None:
        return _masked(digits, kind)
    if digits.endswith("X") and classify(digits[:-1]):  # a number followed by a letter X (XX证券 …)
        return _masked(digits[:-1], classify(digits[:-1]) or "") + run[-1]
    # Two numbers side by side ("13812345678 13912345678"), or a number inside a longer grouping: each part.
    parts = re.split(r"([ \t\-－]+)", run)
    if len(parts) > 1:
        return "".join(_mask_run(p) if i % 2 == 0 else p for i, p in enumerate(parts))
    return run


def mask_sensitive(text: str) -> str:
    """The text with every mobile, resident ID and bank-card number masked (see the module docstring)."""
    if not text:
        return text
    return _RUN.sub(lambda m: _mask_run(m.group(0)), text)
