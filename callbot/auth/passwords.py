"""Password hashing with Argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from knowledge_base.errors import CallbotError

_HASHER = PasswordHasher()
# Verified against when the user name does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("callbot-timing-equaliser")


def check_strength(password: str, min_length: int) -> None:
    if len(password) < min_length:
        raise CallbotError(f"The password is too short: at least {min_length} characters.")
    if len(set(password)) < 4:
        raise CallbotError("The password repeats too few characters: use a longer phrase.")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)
