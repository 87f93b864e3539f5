"""Complaint files (``{"text", "labels": [...]}`` per line) and the label set a model is trained on."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knowledge_base.errors import CallbotError
from knowledge_base.textfiles import read_text

TAIL_BELOW = 100  # a label with fewer training examples than this is a tail label (as the seed reports)
MAX_CHARS = 20_000  # longer complaints are truncated (head and tail kept), and the result says so


@dataclass(frozen=True)
class Complaint:
    text: str
    labels: tuple[str, ...]


def load_complaints(path: Path, require_labels: bool = True) -> list[Complaint]:
    """Every complaint of a JSON-lines file; a malformed line is an error naming the line, nothing is half-read."""
    out: list[Complaint] = []
    for n, line in enumerate(read_text(path, "a JSON-lines file of complaints").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise CallbotError(f"{path}:{n}: not JSON ({exc}); expected {{\"text\": ..., \"labels\": [...]}}.") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise CallbotError(f"{path}:{n}: expected an object with a \"text\" string.")
        labels = row.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
            raise CallbotError(f"{path}:{n}: \"labels\" must be a list of label names.")
        if require_labels and not labels:
            raise CallbotError(f"{path}:{n}: a complaint without labels; every complaint needs 1 to 5.")
        if not row["text"].strip():
            raise CallbotError(f"{path}:{n}: empty complaint text.")
        out.append(Complaint(row["text"], tuple(dict.fromkeys(labels))))
    if not out:
        raise CallbotError(f"{path}: no complaints in it.")
    return out


@dataclass(frozen=True)
class LabelSet:
    """The labels a model knows, in a fixed order, with their training counts."""
    codes: tuple[str, ...]
    counts: tuple[int, ...]

    @classmethod
    def of(cls, complaints: Iterable[Complaint]) -> LabelSet:
        counts = Counter(label for c in complaints for label in c.labels)
        codes = tuple(sorted(counts))
        return cls(codes, tuple(counts[c] for c in codes))

    def __len__(self) -> int:
        return len(self.codes)

    def index(self, code: str) -> int:
        return self.codes.index(code)

    def tail(self, below: int = TAIL_BELOW) -> list[str]:
        return [c for c, n in zip(self.codes, self.counts, strict=True) if n < below]

    def matrix(self, complaints: list[Complaint]) -> tuple[np.ndarray, Counter[str]]:
        """0/1 targets (complaints × labels) and the labels found that the set does not know (with counts)."""
        at = {c: i for i, c in enumerate(self.codes)}
        y = np.zeros((len(complaints), len(self.codes)), dtype=np.float32)
        unknown: Counter[str] = Counter()
        for row, complaint in enumerate(complaints):
            for label in complaint.labels:
                if label in at:
                    y[row, at[label]] = 1.0
                else:
                    unknown[label] += 1
        return y, unknown


def truncate(text: str, limit: int = MAX_CHARS) -> tuple[str, bool]:
    """At most ``limit`` characters: the opening (what happened) and the close (what the customer asks for)."""
    if len(text) <= limit:
        return text, False
    head = limit * 3 // 4
    return text[:head] + "……" + text[-(limit - head):], True
