"""Times in a caller's words: whether they name one ("下周一上午吧" answers "when may we call back?" even when the
matcher hears a greeting in it: 上午 ≈ 上午好), and when exactly (jionlp), rolled forward the way a caller means it."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_TIME = re.compile(
    r"[这下本上]个?(周|星期|礼拜)[一二三四五六日天末]?|(周|星期|礼拜)[一二三四五六日天末]"
    r"|[今明后]天|大后天|过[一两几]天|[上中下]午|早上|晚上|傍晚|凌晨|中午"
    r"|[0-9０-９一二三四五六七八九十两]+\s*(点|时|号|分钟|小时)|半小时|月[初底中]"
    r"|回头|待会|一会|稍后|晚点|改天|下次"
)
# Greeting words (喂 / 你好 / 早上好) say nothing about when: "上午好" is not a time.
_GREETING = re.compile(r"喂|你好|您好|[早上中下晚]午?上?好|早安|哈喽|嗨|hello|hi", re.I)
# A bare clock hour with no part of the day (两点, 3点半): one to eight o'clock means the afternoon or evening.
_BARE_HOUR = re.compile(r"(?<![上中下午晚早凌])[0-9０-９一二三四五六七八九十两]{1,3}\s*[点时]")
_PART_OF_DAY = re.compile(r"[上中下]午|早上|早晨|晚上|傍晚|凌晨|夜里|半夜")
# Words that pin the day: without them a time of day that has passed today means tomorrow (早上九点 at 10:00).
_DAY_WORDS = re.compile(r"[今明后昨]天|大后天|[号日月年]|周|星期|礼拜")
_WEEKDAY = re.compile(r"(?<![下上这本])(周|星期|礼拜)[一二三四五六日天]")


def names_a_time(text: str) -> bool:
    return bool(_TIME.search(_GREETING.sub(" ", text)))


def parse_callback_time(text: str, now: datetime) -> datetime | None:
    """When the caller asks to be called back, as a naive local time at or after ``now`` (the caller's local
    time), or None when the words name no time that can be dated (好的, 改天吧, 月底 — jionlp reads none of
    them). Jionlp dates a bare hour and a bare weekday in the past when they already went by today or this
    week (两点 → 02:00, 早上九点 at 10:00 → 09:00 today, 周三 on a Friday → this Wednesday); a caller means the
    afternoon hour and the next such time."""
    import jionlp  # 0.5 s to import: only where times are read

    words = _GREETING.sub(" ", text).strip()
    if not words:
        return None
    try:
        found = jionlp.parse_time(words, time_base=now.replace(tzinfo=None))
        start = datetime.strptime(found["time"][0], "%Y-%m-%d %H:%M:%S")
        end_text = found["time"][1]
        end = datetime.max if end_text == "inf" else datetime.strptime(end_text, "%Y-%m-%d %H:%M:%S")
    except (ValueError, KeyError, IndexError, TypeError):  # jionlp raises ValueError on text it cannot read
        return None
    now = now.replace(tzinfo=None)
    if _BARE_HOUR.search(words) and not _PART_OF_DAY.search(words) and 1 <= start.hour <= 8:
        start, end = start + timedelta(hours=12), end + timedelta(hours=12) if end != datetime.max else end  # 两点 → 14:00
    if start >= now:
        return start
    if end > now:  # a span we are in (今天晚上 said at 19:00, 周五 on a Friday): soon, not at once
        return now + timedelta(minutes=30)
    if start.date() == now.date() and not _DAY_WORDS.search(words):
        return start + timedelta(days=1)
    if _WEEKDAY.search(words) and now - start < timedelta(days=7):
        return start + timedelta(days=7)
    return None
