"""
Passwords and API tokens: how they are made, stored and checked.

Nothing here is ever stored in a form that lets it be used: a password is kept
as a salted scrypt hash (memory-hard, so a stolen database is slow to attack),
a token as the SHA-256 of its 256 random bits (a token is already a
high-entropy secret, so a fast hash is enough and lets the daemon find it by
its hash).  Comparisons use L{hmac.compare_digest}.

The scrypt functions block for tens of milliseconds: the daemon runs them in a
thread (L{comet.web._auth}), never in the reactor.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

#: scrypt cost: N=2**14, r=8, p=1 is 16 MiB and ~50 ms per check.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32

#: Every token starts with this, so that a leaked one is recognisable.
TOKEN_PREFIX = "comet_"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_KEY_BYTES,
        maxmem=2 * 128 * r * (n + p + 2),
    )


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The stored form of C{password}: C{scrypt$n$r$p$salt$key}, a new random salt each time."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


@functools.lru_cache(maxsize=1)
def dummy_hash() -> str:
    """
    A hash no password matches in practice (a random one), checked when the
    user is unknown or has no password, so that those cases cost the same
    scrypt work as a wrong password.
    """
    return hash_password(secrets.token_urlsafe(32))


def verify_password(password: str, stored: str | None) -> bool:
    """
    Whether C{password} matches the stored hash.  C{stored} C{None} (no such
    user, or a user without a password) runs the same work against
    L{dummy_hash} and answers C{False}: one code path for every outcome.
    """
    real = stored is not None
    encoded = stored if real else dummy_hash()
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        expected = base64.b64decode(key)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        # A corrupt row: do the work anyway, and refuse.
        scheme, n, r, p, salt, key = dummy_hash().split("$")
        expected = base64.b64decode(key)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
        real = False
    return hmac.compare_digest(got, expected) and real


def new_token() -> str:
    """A new API token (256 random bits), to be shown once and stored as L{token_hash}."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
