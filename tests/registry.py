"""State shared by the fixtures and the test modules. pytest imports conftest.py as ``conftest`` while test modules
import it as ``tests.conftest``: two copies, so anything both must see lives in this ordinary module."""

from __future__ import annotations

STAFF_TOKENS: dict[str, str] = {}  # web app base URL → the test admin's API token
