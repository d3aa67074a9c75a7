"""
Passwords and API tokens: how they are made, stored and checked.

Nothing here is ever stored in a form that lets it be used: a password is kept
as a salted scrypt hash (memory-hard, so a stolen database is slow to attack),
a token as the SHA-256 of its 256 random bits (a token is already a
high-entropy secret, so a fast hash is enough and lets the daemon find it by
its hash).  Comparisons use L{hmac.compare_digest}.

The scrypt functions block for about half a second of CPU: the daemon runs
them in a small thread pool of their own (L{comet.web._auth}), never in the
reactor, and bounds how many may wait for it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

#: scrypt cost, from OWASP's password storage guidance (2023), which lists
#: N=2**17,r=8,p=1 (128 MiB) and N=2**16,r=8,p=2 (64 MiB) as equal: the same
#: work, half the memory per check.  Measured here (2 cores, Python's
#: hashlib, OpenSSL): 0.63 s of CPU per check for either (N=2**14,r=8,p=1,
#: the earlier cost: 0.09 s).  A hash keeps the parameters it was made with,
#: so older hashes still verify, and are remade at the next login
#: (L{needs_rehash}).
SCRYPT_N = 2**16
SCRYPT_R = 8
SCRYPT_P = 2
#: The shortest password accepted (NIST SP 800-63B asks at least 8; a
#: password alone guards an admin's API here, so 12).
MIN_PASSWORD_LENGTH = 12
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


def check_password_strength(password: str) -> None:
    """
    Refuse a password that is too short (L{MIN_PASSWORD_LENGTH} characters),
    with a L{comet.errors.InvalidInput} that says so.
    """
    from comet.errors import InvalidInput

    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters, not {len(password)}"
        )


def needs_rehash(stored: str | None) -> bool:
    """Whether C{stored} was made with other parameters than today's (or is not ours)."""
    if stored is None:
        return False
    return not stored.startswith(f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$")


def hash_password(password: str, n: int | None = None, r: int | None = None,
                  p: int | None = None) -> str:
    """
    The stored form of C{password}: C{scrypt$n$r$p$salt$key}, a new random
    salt each time; today's parameters unless given.
    """
    n = SCRYPT_N if n is None else n
    r = SCRYPT_R if r is None else r
    p = SCRYPT_P if p is None else p
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


def dummy_hash() -> str:
    """
    A hash no password matches in practice (a random one), checked when the
    user is unknown or has no password, so that those cases cost the same
    scrypt work as a wrong password (with today's parameters).
    """
    return _dummy_hash(SCRYPT_N, SCRYPT_R, SCRYPT_P)


@functools.lru_cache(maxsize=4)
def _dummy_hash(n: int, r: int, p: int) -> str:
    return hash_password(secrets.token_urlsafe(32), n, r, p)


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
