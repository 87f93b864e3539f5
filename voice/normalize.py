"""ASR text → what the NLU expects: Simplified Chinese, no stray spaces, numbers written the way the KB writes them.

Whisper writes Traditional characters now and then (opencc t2s fixes that) and writes numbers as digits
("4点", "1.5%", "3500元") where the knowledge base and most callers' typed questions use Chinese numerals
("四点", "百分之一点五"). Short numbers are turned into Chinese numerals with cn2an; long digit strings (stock
codes, account and phone numbers) stay digits, since "六十万零五百一十九" is not how anyone says a stock code.
"""

from __future__ import annotations

import re
from functools import lru_cache

LONG_NUMBER = re.compile(r"\d{5,}")
CJK_SPACE = re.compile(r"(?<=[\u4e00-\u9fff，。？！、])\s+|\s+(?=[\u4e00-\u9fff，。？！、])")


@lru_cache(maxsize=1)
def _t2s():  # type: ignore[no-untyped-def]
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    return _t2s().convert(text)


def numerals_to_chinese(text: str) -> str:
    """Digits → Chinese numerals (percentages, amounts, times), keeping 5+-digit strings as they are."""
    import cn2an

    parts, last = [], 0
    for m in LONG_NUMBER.finditer(text):
        parts.append(_convert(text[last:m.start()], cn2an))
        parts.append(m.group())
        last = m.end()
    parts.append(_convert(text[last:], cn2an))
    return "".join(parts)


def _convert(chunk: str, cn2an) -> str:  # type: ignore[no-untyped-def]
    if not any(c.isdigit() for c in chunk):
        return chunk
    try:
        return cn2an.transform(chunk, "an2cn")
    except Exception:  # noqa: BLE001 — cn2an rejects some shapes ("1..2"); the digits are still readable to the NLU
        return chunk


def normalize_transcript(text: str, numerals: bool = True) -> str:
    text = to_simplified(text.strip())
    text = CJK_SPACE.sub("", text).replace(",", "，").replace("?", "？").replace("!", "！")
    return numerals_to_chinese(text) if numerals else text
