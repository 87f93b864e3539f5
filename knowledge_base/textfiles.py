"""Reading text files people hand the product (one complaint or sentence per line, JSON lines): UTF-8 or GBK,
with a clear error for a missing, binary or undecodable file instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from knowledge_base.errors import CallbotError


def read_text(path: Path, what: str = "text") -> str:
    if not path.is_file():
        raise CallbotError(f"{path}: no such file.")
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise CallbotError(f"{path}: a binary file, not {what}.")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CallbotError(f"{path}: neither UTF-8 nor GBK; save it as UTF-8 text.")


def read_lines(path: Path) -> Iterator[str]:
    """Lines of a text file, or of stdin for ``-``."""
    if str(path) == "-":
        yield from (line.rstrip("\n") for line in sys.stdin)
        return
    yield from read_text(path, "text; give one text per line (UTF-8)").splitlines()
