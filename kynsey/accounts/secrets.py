"""Password hashing (argon2) and opaque tokens stored only as their SHA-256.

Hashing costs ~0.1-0.5 s of CPU by design, so the async helpers run it in a
worker thread: a login must not stall every stream on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

TOKEN_PREFIX = "ky_"


@cache
def _dummy_hash() -> str:
    """Verified against when a user has no password (or no account), so a wrong name costs
    as long as a wrong password. Made on first use: at import it cost every CLI call ~0.6 s."""
    return _hasher.hash("kynsey-no-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def hash_password_off_loop(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_off_loop(password_hash: str | None, password: str) -> bool:
    return await asyncio.to_thread(verify_password, password_hash, password)


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
