"""Rescoring a transcript toward what the call can hear, by sound.

Most of Whisper's errors on callers' replies are homophones and near-homophones (举报 → 举保, 多少 → 多小,
啥 → 撒): wrong characters, right syllables. The encoder reads characters, so it loses them. Here the
transcript and every question of the call's intents are compared as toneless pinyin (letters, syllables
separated by spaces, with the sounds a phone line blurs merged); when one question is close enough by sound
(rapidfuzz's normalised Indel ratio ≥ ``threshold``) the NLU is given that question instead. Measured in `benchmarks/voice.py` against the transcript as heard.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


def syllables(text: str) -> tuple[str, ...]:
    from pypinyin import Style, lazy_pinyin

    out = lazy_pinyin([c for c in text if "\u4e00" <= c <= "\u9fff" or c.isalnum()], style=Style.NORMAL, errors="ignore")
    # Merge the sounds a phone line and a southern accent blur: zh/z, ch/c, sh/s, n/l, -ng/-n.
    return tuple(s.replace("zh", "z").replace("ch", "c").replace("sh", "s").replace("ng", "n").replace("l", "n") for s in out)


@dataclass(frozen=True)
class SoundMatch:
    question: str
    intent: str
    similarity: float


class CallPhonetics:
    """Every question (standard and extension) of one scenario's intents, by sound."""

    def __init__(self, questions: list[tuple[str, str]]) -> None:
        self.questions = [(q, intent, " ".join(syllables(q))) for q, intent in questions if q.strip()]

    def nearest(self, transcript: str) -> SoundMatch | None:
        from rapidfuzz import fuzz

        heard = " ".join(syllables(transcript))
        if not heard:
            return None
        best: SoundMatch | None = None
        for question, intent, sound in self.questions:
            sim = fuzz.ratio(heard, sound) / 100
            if best is None or sim > best.similarity:
                best = SoundMatch(question, intent, round(float(sim), 4))
        return best

    def rescore(self, transcript: str, threshold: float = 0.8) -> str:
        match = self.nearest(transcript)
        return match.question if match is not None and match.similarity >= threshold else transcript


@lru_cache(maxsize=32)
def _for_scenario(scenario: str, kb_version: int) -> CallPhonetics:
    from callbot.context import get_kb

    kb = get_kb()
    pairs: list[tuple[str, str]] = []
    for intent in kb.intents(scenario):
        if intent["name"] == "out_of_scope":
            continue
        full = kb.intent(intent["id"])
        pairs.append((intent["standard_question"], intent["name"]))
        pairs += [(q["text"], intent["name"]) for q in full.get("extension_questions", []) if q.get("status") == "approved"]
    return CallPhonetics(pairs)


def call_phonetics(scenario: str) -> CallPhonetics:
    from callbot.context import get_store

    return _for_scenario(scenario, get_store().kb_version())
