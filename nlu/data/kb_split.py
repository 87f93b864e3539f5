"""A fixed held-out split of the knowledge base's extension questions.

Pair training learns "standard question ≈ extension question" from the knowledge base's intent groups.
A leave-one-out measure on those same questions then rewards memorising them, so every pair-trained
model looked better on the KB than it is. The split is a hash of the question text: stable across
databases and runs, no state to store, and a question added later falls on one side for good. The same
text in two scenarios (dialogue intents repeat: 是的, 不是我) falls on the same side in both.

v1 held out 20 % of FAQ questions and every dialogue intent's question (none were trained on). v2 holds
out the same 20 % of both kinds and trains on the rest: a call's short spoken replies (唔系, 我在开会) are
what the knowledge base teaches best, and the held-out fifth still measures unseen wordings. A model
that never trained on dialogue questions is clean under both.
"""

from __future__ import annotations

import hashlib

HELDOUT_PER_MILLE = 200  # 20 % of extension questions are never trained on
SPLIT_ID = "md5-200-v2"  # recorded in a model's metadata; change it if the rule above changes


def is_heldout(text: str) -> bool:
    return int(hashlib.md5(("kb-heldout\t" + text).encode()).hexdigest()[:8], 16) % 1000 < HELDOUT_PER_MILLE


def is_clean_query(text: str) -> bool:
    """Whether an extension question may measure a model: no training pair ever contains it."""
    return is_heldout(text)


def saw_heldout(meta: dict) -> bool:
    """Whether a model (by its ``callbot_encoder.json``) was pair-trained on held-out KB questions: models
    from before the split trained on every FAQ group and say so only in their data list."""
    if "kb_heldout_seen" in meta:
        return bool(meta["kb_heldout_seen"])
    return any(str(d).startswith("knowledge base FAQ groups") for d in meta.get("data", []))
