"""Bot text → text a Mandarin voice reads correctly.

Both voices read only Chinese characters well: digits, percent signs and codes are spelled out first. Amounts
and times become numerals as a person says them (3500元 → 三千五百元, 16:00 → 十六点); stock codes, phone and
account numbers are read digit by digit (600519 → 六零零五一九), as call-centre agents do.
"""

from __future__ import annotations

import re

from voice.normalize import numerals_to_chinese

DIGITS = "零一二三四五六七八九"
CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
LONG_NUMBER = re.compile(r"\d{5,}")


def _clock(m: re.Match[str]) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    return f"{hour}点" + ("" if minute == 0 else "半" if minute == 30 else f"{minute}分")


def speakable(text: str) -> str:
    text = CLOCK.sub(_clock, text)
    text = LONG_NUMBER.sub(lambda m: "".join(DIGITS[int(c)] for c in m.group()), text)
    return numerals_to_chinese(text)
