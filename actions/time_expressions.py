"""Whether a caller's words name a time: "下周一上午吧" answers "when may we call back?" even when the
matcher hears a greeting in it (上午 ≈ 上午好). Chinese only, by pattern; no dates are parsed."""

from __future__ import annotations

import re

_TIME = re.compile(
    r"[这下本上]个?(周|星期|礼拜)[一二三四五六日天末]?|(周|星期|礼拜)[一二三四五六日天末]"
    r"|[今明后]天|大后天|过[一两几]天|[上中下]午|早上|晚上|傍晚|凌晨|中午"
    r"|[0-9０-９一二三四五六七八九十两]+\s*(点|时|号|分钟|小时)|半小时|月[初底中]"
    r"|回头|待会|一会|稍后|晚点|改天|下次"
)
# Greeting words (喂 / 你好 / 早上好) say nothing about when: "上午好" is not a time.
_GREETING = re.compile(r"喂|你好|您好|[早上中下晚]午?上?好|早安|哈喽|嗨|hello|hi", re.I)


def names_a_time(text: str) -> bool:
    return bool(_TIME.search(_GREETING.sub(" ", text)))
