"""The shared secret Rasa's NLU component sends to POST /nlu/parse (``Authorization: Bearer …``).

Taken from ``auth.service_token`` when set (several machines), else generated once into the cache directory
with mode 0600 and read by every process of this machine (web app, Rasa, the action server).
"""

from __future__ import annotations

import os
import secrets

from callbot.settings import Settings, get_settings


def service_token(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    configured = settings.auth.service_token or os.environ.get("CALLBOT_SERVICE_TOKEN", "")
    if configured:
        return configured
    path = settings.cache_dir / "service_token"
    if path.is_file():
        return path.read_text(encoding="ascii").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # O_EXCL: two processes starting together agree on the first one's token.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token)
    return token
