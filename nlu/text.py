"""Input text checks for NLU: what a caller or widget sends is untrusted."""

from __future__ import annotations

import re
import unicodedata

from knowledge_base.errors import CallbotError

MAX_CHARS = 512  # longer input is cut: callers' turns are short, and the encoder sees 128 tokens anyway
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")


class EmptyText(CallbotError):
    pass


def normalise(text: object) -> str:
    """NFKC (full-width → half-width), strip control characters, collapse spaces, cut to MAX_CHARS."""
    if not isinstance(text, str):
        raise CallbotError("text must be a string.")
    clean = unicodedata.normalize("NFKC", text)
    clean = _CONTROL.sub(" ", clean)
    clean = re.sub(r"\s+", " ", clean).strip()
    if not clean:
        raise EmptyText("text is empty (or only whitespace/control characters); send what the caller said.")
    return clean[:MAX_CHARS]
