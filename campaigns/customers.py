"""A campaign's customer file: read whole, every bad row reported with its line and reason, nothing kept on error.

Columns: ``name`` (or 姓名), ``phone`` (or 电话/手机), and one column per variable of the scenario (``amount``,
``pay_deadline`` …). UTF-8 (with or without a BOM) or GBK, as spreadsheets in China save it. A phone number is
a mainland mobile (1[3-9] and 9 more digits, an optional +86 / 86 prefix) or a landline with its area code
(0 + 2–3 digits, then 7–8 digits).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from knowledge_base.errors import CallbotError

NAME_COLUMNS = ("name", "customer_name", "姓名", "客户姓名")
PHONE_COLUMNS = ("phone", "mobile", "电话", "手机", "手机号")
MOBILE = re.compile(r"^1[3-9]\d{9}$")
LANDLINE = re.compile(r"^0\d{2,3}\d{7,8}$")
MAX_BYTES = 200 * 1024 * 1024


class CustomerFileError(CallbotError):
    def __init__(self, path: Path, problems: list[str]):
        shown = problems[:50]
        more = f"\n… and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(f"{path}: {len(problems)} problem(s), nothing was imported:\n" + "\n".join(shown) + more)
        self.problems = problems


@dataclass
class Customer:
    line: int
    name: str
    phone: str
    variables: dict[str, str] = field(default_factory=dict)


def normalise_phone(raw: str) -> str | None:
    digits = re.sub(r"[\s\-()（）]", "", raw or "")
    digits = re.sub(r"^(\+?86)(?=1\d{10}$)", "", digits)
    return digits if MOBILE.match(digits) or LANDLINE.match(digits) else None


def _encoding(path: Path) -> str:
    """UTF-8 (BOM or not) when the whole file decodes as UTF-8, else GB18030 (a superset of GBK); read in chunks."""
    import codecs

    with path.open("rb") as f:
        head = f.read(4096)
        if b"\x00" in head:
            raise CallbotError(f"{path}: this is a binary file, not a CSV; export the sheet as CSV (UTF-8 or GBK).")
        for encoding in ("utf-8-sig", "gb18030"):
            decoder = codecs.getincrementaldecoder(encoding)()
            f.seek(0)
            try:
                while chunk := f.read(1 << 20):
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
                return encoding
            except UnicodeDecodeError:
                continue
    raise CallbotError(f"{path}: neither UTF-8 nor GBK; save the file as CSV UTF-8.")


def _column(header: list[str], names: Iterable[str]) -> str | None:
    lowered = {h.strip().lower(): h for h in header}
    return next((lowered[n] for n in names if n in lowered), None)


def iter_customers(path: Path, variables: list[str], do_not_call: set[str], problems: list[str],
                   progress: Callable[[int], None] | None = None) -> Iterator[Customer]:
    """Stream the file's good customers; every bad line is appended to ``problems`` (the caller decides that the file
    is rejected). ``progress`` gets the bytes read so far. ``variables``: the scenario's own (``customer_name`` comes
    from the name column)."""
    if not path.is_file():
        raise CallbotError(f"{path}: no such file.")
    if path.stat().st_size > MAX_BYTES:
        raise CallbotError(f"{path}: larger than {MAX_BYTES // 1024 // 1024} MB; split it into several campaigns.")
    if path.stat().st_size == 0:
        raise CallbotError(f"{path}: the file is empty; it needs a header line (name,phone,…) and one line per customer.")
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding=_encoding(path), newline="") as f:
        reader = csv.DictReader(f)
        try:
            header = [h for h in (reader.fieldnames or []) if h is not None]
        except csv.Error as exc:
            raise CallbotError(f"{path}: line 1 is not CSV ({exc}).") from None
        if not header:
            raise CallbotError(f"{path}: the file is empty; it needs a header line (name,phone,…) and one line per customer.")
        name_col, phone_col = _column(header, NAME_COLUMNS), _column(header, PHONE_COLUMNS)
        wanted = [v for v in variables if v != "customer_name"]
        missing = ([] if name_col else ["name"]) + ([] if phone_col else ["phone"]) + [v for v in wanted if v not in header]
        if missing:
            raise CustomerFileError(path, [f"line 1: missing column(s) {', '.join(missing)} (the header has: {', '.join(header)})"])
        seen: dict[str, int] = {}
        try:
            for n, row in enumerate(reader):
                if progress is not None and n % 2000 == 0:
                    progress(raw.tell())
                line = reader.line_num
                if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue  # a blank line
                name = (row.get(name_col) or "").strip()
                raw_phone = (row.get(phone_col) or "").strip()
                phone = normalise_phone(raw_phone)
                reasons = []
                if not name:
                    reasons.append("no name")
                if phone is None:
                    reasons.append(f"bad phone number {raw_phone!r}")
                elif phone in seen:
                    reasons.append(f"duplicate of line {seen[phone]} ({phone[:3]}****{phone[-4:]})")
                elif phone in do_not_call:
                    reasons.append("the number is on the do-not-call list")
                empty = [v for v in wanted if not (row.get(v) or "").strip()]
                if empty:
                    reasons.append(f"missing {', '.join(empty)}")
                if None in row:
                    reasons.append("more fields than the header has")
                if reasons:
                    problems.append(f"line {line}: {'; '.join(reasons)}")
                    continue
                assert phone is not None
                seen[phone] = line
                yield Customer(line, name, phone, {v: row[v].strip() for v in wanted})
        except csv.Error as exc:
            problems.append(f"line {reader.line_num}: not CSV ({exc}); the rest of the file was not read")
        if progress is not None:
            progress(path.stat().st_size)


def read_customers(path: Path, variables: list[str], do_not_call: set[str]) -> list[Customer]:
    """Every customer of the file, or CustomerFileError listing every bad line."""
    problems: list[str] = []
    customers = list(iter_customers(path, variables, do_not_call, problems))
    if problems:
        raise CustomerFileError(path, problems)
    if not customers:
        raise CallbotError(f"{path}: no customers after the header line.")
    return customers


def neutralise_formula(value: str) -> str:
    """A cell that a spreadsheet would run as a formula (=HYPERLINK(…), +, -, @) is written as text in exports."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
