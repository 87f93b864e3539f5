"""How far a transcript is from what was said."""

from __future__ import annotations


def character_error_rate(said: str, heard: str) -> float:
    """Edit distance over letters, digits and Chinese characters (punctuation and spaces ignored), per character said."""
    keep = lambda t: [c for c in t if c.isalnum()]  # noqa: E731
    r, h = keep(said), keep(heard)
    d = list(range(len(h) + 1))
    for i, rc in enumerate(r, 1):
        prev, d[0] = d[0], i
        for j, hc in enumerate(h, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (rc != hc))
    return d[len(h)] / max(1, len(r))
