"""A Chinese-sized vocabulary cut from e5-small's 250k XLM-R unigram vocabulary.

Kept: the special tokens, every piece the given texts use (so their segmentation is unchanged: the
Viterbi path only loses alternatives), every single-character CJK piece (any Chinese character stays
representable), ASCII letters, digits and punctuation. Scores are kept, so the cut tokenizer is the
same unigram model restricted to these pieces.
"""

from __future__ import annotations

import copy
import json
import unicodedata
from collections import Counter
from pathlib import Path

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
MASK = "<mask>"


def _keep_always(piece: str) -> bool:
    core = piece.lstrip("\u2581")
    if len(core) != 1:
        return False
    ch = core
    if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf":
        return True
    if ch.isascii() and (ch.isalnum() or unicodedata.category(ch).startswith("P")):
        return True
    return unicodedata.category(ch).startswith("P")  # full-width punctuation


def cut_vocabulary(tokenizer_json: Path, texts: list[str], out_path: Path, min_count: int = 1) -> list[int]:
    """Write a reduced tokenizer.json; return new_id -> old_id (for copying embedding rows)."""
    from tokenizers import Tokenizer

    full = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab: list[list] = full["model"]["vocab"]
    tok = Tokenizer.from_file(str(tokenizer_json))
    counts: Counter[int] = Counter()
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        counts.update(enc.ids)
    specials = {p: i for i, (p, _s) in enumerate(vocab) if p in SPECIALS or p == MASK}
    keep = [i for i, (piece, _s) in enumerate(vocab)
            if i not in specials.values() and (counts[i] >= min_count or _keep_always(piece))]
    old_ids = [specials[p] for p in SPECIALS] + keep + [specials[MASK]]
    new_vocab = [vocab[i] for i in old_ids]
    new_index = {vocab[i][0]: n for n, i in enumerate(old_ids)}

    cut = copy.deepcopy(full)
    cut["model"]["vocab"] = new_vocab
    cut["model"]["unk_id"] = new_index["<unk>"]
    for tok_def in cut["added_tokens"]:
        tok_def["id"] = new_index[tok_def["content"]]
    for name, special in cut["post_processor"].get("special_tokens", {}).items():
        special["ids"] = [new_index[name]]
    out_path.write_text(json.dumps(cut, ensure_ascii=False), encoding="utf-8")
    return old_ids
