"""Errors a user can act on: each message names the problem and the fix."""

from __future__ import annotations


class CallbotError(Exception):
    """Base for errors shown to a user as one clear message (no traceback)."""

    exit_code = 1


class DatabaseUnavailable(CallbotError):
    pass


class DatabaseLocked(CallbotError):
    pass


class NotFound(CallbotError):
    exit_code = 4


class ImportRejected(CallbotError):
    """An import file had problems; nothing was written."""

    exit_code = 3

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"Import rejected: {len(problems)} problem(s); nothing was written.\n" + "\n".join(problems)
        )
