"""What the call expects to hear, as a decoding hint for the recogniser.

Inside a scenario the replies form a nearly closed set (yes, no, later, a person, how much, until when…).
Whisper takes "hotwords" that it conditions on like a prompt; the standard questions of the scenario's
intents give it the spellings that matter (缴款 not 角款, 中签 not 钟签). Measured in `benchmarks/voice.py`.

The phrases are separated by spaces: joined by "，" the hint made Whisper write "Ｇ" for the caller's own
commas (是我Ｇ你说Ｇ, which the NLU then failed on) and pulled 人工 towards 员工.
"""

from __future__ import annotations

from functools import lru_cache

MAX_CHARS = 160  # Whisper's prompt window is 224 tokens, shared with the domain prompt


@lru_cache(maxsize=64)
def _hint(scenario: str, kb_version: int) -> str:
    from callbot.context import get_kb

    words: list[str] = []
    for intent in get_kb().intents(scenario):
        if intent["name"] == "out_of_scope":
            continue
        words.append(intent["standard_question"])
    text = ""
    for w in words:
        if len(text) + len(w) + 1 > MAX_CHARS:
            break
        text += (" " if text else "") + w
    return text


def call_hint(scenario: str | None) -> str | None:
    if not scenario:
        return None
    from callbot.context import get_store

    return _hint(scenario, get_store().kb_version()) or None
