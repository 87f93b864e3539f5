"""Cutting a text into sentences with their character offsets: the units the classifier judges.

A violation is usually one sentence of a longer reply, and judging the whole reply would let the compliant part
outvote it. A sentence, not a comma clause, because negation and quotation cross commas ("如果有人跟您说保本保收益，
那一定要提高警惕" is a warning; its first half alone is not). Units end at sentence punctuation; fragments shorter
than ``MIN_CHARS`` join the next one; a unit longer than ``MAX_CHARS`` is cut into overlapping windows so that very
long texts are scanned whole and spans stay true to the original text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BOUNDARY = re.compile(r"[。！？!?；;\n]+")
MIN_CHARS = 6
MAX_CHARS = 80
STRIDE = 60


@dataclass(frozen=True)
class Clause:
    text: str
    start: int
    end: int


def split_clauses(text: str) -> list[Clause]:
    pieces: list[tuple[int, int]] = []
    pos = 0
    for m in BOUNDARY.finditer(text):
        if m.end() > pos:
            pieces.append((pos, m.end()))
        pos = m.end()
    if pos < len(text):
        pieces.append((pos, len(text)))
    merged: list[tuple[int, int]] = []
    pending: tuple[int, int] | None = None
    for start, end in pieces:
        if pending is not None:
            start = pending[0]
        if len(text[start:end].strip()) < MIN_CHARS:
            pending = (start, end)
            continue
        pending = None
        merged.append((start, end))
    if pending is not None:
        if merged:
            merged[-1] = (merged[-1][0], pending[1])
        else:
            merged.append(pending)
    out: list[Clause] = []
    for start, end in merged:
        while end - start > MAX_CHARS:
            out.append(_clause(text, start, start + MAX_CHARS))
            start += STRIDE
        out.append(_clause(text, start, end))
    return [c for c in out if c.text]


def _clause(text: str, start: int, end: int) -> Clause:
    raw = text[start:end]
    lead = len(raw) - len(raw.lstrip())
    body = raw.strip()
    return Clause(body, start + lead, start + lead + len(body))
