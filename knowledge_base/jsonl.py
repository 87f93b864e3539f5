"""Reading JSON-lines data files (held-out sets, labelled training sentences): a malformed line is an error that
names the file and line and says what was expected."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from knowledge_base.errors import CallbotError


def records(path: Path, required: tuple[str, ...] = ("text",), what: str = "record") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; every field in ``required`` must be present."""
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            for key in required:
                row[key]
        except (ValueError, KeyError, TypeError) as exc:
            fields = " and ".join(repr(k) for k in required)
            raise CallbotError(f"{path}:{n}: not a {what} ({exc}); expected JSON with {fields}.") from None
        yield n, row
