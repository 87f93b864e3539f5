"""What the auth layer refuses, each with the HTTP status the web app answers with."""

from __future__ import annotations

from knowledge_base.errors import CallbotError


class NotSignedIn(CallbotError):
    http_status = 401


class Forbidden(CallbotError):
    http_status = 403


class TooManyAttempts(CallbotError):
    http_status = 429

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BadCredentials(CallbotError):
    http_status = 401
