"""
Who is asking, and may they: authentication, roles, body limits and the audit
log, applied by L{comet.web._serve.serve} to every request.

  - Credentials: C{Authorization: Bearer <token>} (an API token, looked up by
    its hash on every request, in memory while no user or token row has been
    written since -- L{comet.store._readcache} -- so a revoked token stops
    working at once, even when C{comet-admin} revoked it) or
    C{Authorization: Basic} (a user's password, checked with scrypt in a
    thread, never in the reactor; never cached).
  - An unknown user, a user without a password and a wrong password run the
    same code (L{comet.credentials.verify_password} against a dummy hash) and
    get the same answer, so their timing tells nothing.
  - Password guesses are limited per user name and address, and their
    scrypt work is bounded (L{comet.web._throttle}); nothing waits, and
    tokens are never throttled.  Failed logins are in the audit log.
  - Change requests a browser sends for another site's page are refused
    (L{comet.web._origin}).
  - The role an endpoint needs is in the route table (L{Endpoint.role}).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from typing import Any

import attrs
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from comet.credentials import TOKEN_PREFIX, hash_password, needs_rehash, verify_password
from comet.names import check_name
from comet.web._errors import HTTPError
from comet.web._origin import OriginPolicy
from comet.web._throttle import LoginThrottle, PasswordChecks, WrongTokens
from comet.web._table import ADMIN, PUBLIC, TICKET, Endpoint, allows

log = Logger()

REALM = "comet"
CHALLENGE = f'Bearer realm="{REALM}", Basic realm="{REALM}", charset="UTF-8"'

#: Methods that change something, and so are written to the audit log.
AUDITED = frozenset({"POST", "PUT", "DELETE"})


@attrs.frozen
class Identity:
    """An authenticated caller."""

    name: str
    role: str


#: The role of a caller with the scrape token (C{[metrics] token_file}): no
#: role of L{comet.web._table.ROLE_RANKS}, so it may read L{SCRAPE_PATHS} only.
SCRAPE = "scrape"
#: The paths the scrape token may read.
SCRAPE_PATHS = frozenset({"metrics"})
#: Public paths that still identify a caller who sends credentials (the
#: health check tells an authenticated caller more); credentials that are
#: wrong count as none there, so a load balancer always gets its status.
IDENTIFIED_PUBLIC = frozenset({"health"})


def _unauthorized(reason: str) -> HTTPError:
    return HTTPError(401, reason, {"WWW-Authenticate": CHALLENGE})


#: Longer than any token L{comet.credentials.new_token} makes.
_TOKEN_MAX = 128


def client_address(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


class Authenticator:
    """
    Turns a request's C{Authorization} header into an L{Identity}, or a 401.

    Nothing here ever waits: a right token or password is answered as soon
    as it is checked, whoever failed before it from the same address.  A
    wrong token costs one lookup by its hash (256 random bits are not
    guessed, so tokens need no throttle) and, for the first few of an
    address (L{WrongTokens}), an audit entry.  A password guess is first
    counted by the L{LoginThrottle} (429 when over its limits) and then
    checked in L{PasswordChecks}' own threads (429/503 when they are busy).

    @param users: L{comet.store.users.Users}.
    @param enabled: C{False} (C{[api] auth = false}): every caller is the
        admin C{anonymous}.
    @param throttle: a L{LoginThrottle}.
    @param checks: a L{PasswordChecks}.
    @param tokens: a L{WrongTokens}.
    @param scrape_token: the token of C{[metrics] token_file}: its caller has
        the role L{SCRAPE}, which reads L{SCRAPE_PATHS} only.
    """

    def __init__(self, users, clock=None, throttle: LoginThrottle | None = None,
                 enabled: bool = True, checks: PasswordChecks | None = None,
                 tokens: WrongTokens | None = None, scrape_token: str | None = None):
        from twisted.internet import reactor

        if clock is None:
            clock = reactor
        self.users = users
        self.clock = clock
        self.throttle = throttle if throttle is not None else LoginThrottle(clock)
        self.checks = checks if checks is not None else PasswordChecks(reactor)
        self.tokens = tokens if tokens is not None else WrongTokens(clock)
        self.enabled = enabled
        self._scrape_token = scrape_token.encode("utf-8") if scrape_token else None

    async def identify(self, request: IRequest) -> Identity:
        if not self.enabled:
            return Identity("anonymous", ADMIN)
        header = request.getHeader(b"authorization")
        if header is None:
            raise _unauthorized("credentials are required: a Bearer token or Basic user and password")
        scheme, _, value = header.decode("latin-1").strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and value:
            identity = await self._token(request, value)
        elif scheme == "basic" and value:
            identity = await self._password(request, value)
        else:
            identity = None
        if identity is None:
            raise _unauthorized("wrong user name, password or token")
        return identity

    async def _token(self, request: IRequest, token: str) -> Identity | None:
        if self._scrape_token is not None and hmac.compare_digest(
                token.encode("utf-8"), self._scrape_token):
            return Identity("(scrape token)", SCRAPE)
        if not token.startswith(TOKEN_PREFIX) or len(token) > _TOKEN_MAX:
            return None   # no token of ours: not worth a lookup
        user = await self.users.by_token(token)
        if user is not None:
            return Identity(user.name, user.role)
        address = client_address(request)
        if self.tokens.audit(address):
            log.warn("wrong API token from {address}", address=address)
            await self._audit_failure(request, WrongTokens.NAME)
        return None

    async def _password(self, request: IRequest, value: str) -> Identity | None:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ":"
        name, _, password = decoded.partition(":")
        address = client_address(request)
        self.throttle.reserve(name, address)   # 429 when over the limits
        try:
            user = await self.users.get(name) if check_name(name) else None
            stored = user.password if user is not None else None
            # The same scrypt work whether or not the user exists.
            ok = await self.checks.run(address, verify_password, password, stored)
        except BaseException:
            self.throttle.cancelled(name, address)
            raise
        if not ok or user is None:
            self.throttle.failed(name, address)
            log.warn("failed login as {name!r} from {address}", name=name, address=address)
            await self._audit_failure(request, name)
            return None
        self.throttle.succeeded(name, address)
        if needs_rehash(stored):
            await self._rehash(address, name, password, stored)
        return Identity(user.name, user.role)

    async def _rehash(self, address: str, name: str, password: str, stored: str) -> None:
        """Store the password again with today's scrypt parameters (its old hash still verified)."""
        try:
            new = await self.checks.run(address, hash_password, password)
            if await self.users.replace_password_hash(name, stored, new):
                log.info("password of {name!r} hashed again with today's parameters", name=name)
        except Exception:
            # The login stands; the next one tries again.
            log.failure("cannot store {name!r}'s password hash again", name=name)

    async def _audit_failure(self, request: IRequest, name: str) -> None:
        """
        A failed login, in the audit log, status 401: the user name tried (when
        it is a name), or C{(token)} for a wrong API token.
        """
        if name != WrongTokens.NAME and not check_name(name):
            name = "(not a name)"
        try:
            await self.users.audit(
                int(self.clock.seconds()), name,
                request.method.decode("ascii", "replace"),
                request.uri.decode("utf-8", "replace"), 401, None,
            )
        except Exception:
            log.failure("cannot write the audit log")


class Guard:
    """
    What L{serve} does around a handler: admit (401, 403, 413) and record (the
    audit log).

    @param authenticator: an L{Authenticator}, or anything with an C{async
        identify(request)}.
    @param users: where the audit log goes (C{None}: nowhere, for tests of
        the pipeline alone).
    """

    def __init__(self, authenticator, users=None, max_body: int = 1024 * 1024, clock=None,
                 origins: OriginPolicy | None = None):
        self.authenticator = authenticator
        self.users = users
        self.max_body = max_body
        self.clock = clock
        if origins is None:
            # Without credentials, the Host is what tells a rebinding page apart.
            origins = OriginPolicy(check_host=not getattr(authenticator, "enabled", True))
        self.origins = origins

    async def identify(self, request: IRequest) -> Identity:
        return await self.authenticator.identify(request)

    async def admit(self, request: IRequest, endpoint: Endpoint) -> Identity | None:
        """The caller's identity once it may call C{endpoint}; else raise 401/403/413."""
        # Before the credentials: another site's page gets no password check.
        self.origins.check(request)
        identity = None
        if endpoint.role == PUBLIC and endpoint.path in IDENTIFIED_PUBLIC:
            if request.getHeader(b"authorization") is not None:
                try:
                    identity = await self.identify(request)
                except HTTPError:
                    identity = None
                request.comet_identity = identity
        elif endpoint.role not in (PUBLIC, TICKET):
            identity = await self.identify(request)
            # Known before the role check, so a 403 is audited with its user.
            request.comet_identity = identity
            scraping = identity.role == SCRAPE and endpoint.path in SCRAPE_PATHS
            if not scraping and not allows(identity.role, endpoint.role):
                raise HTTPError(
                    403,
                    f"user {identity.name!r} ({identity.role}) may not {endpoint.method}"
                    f" {request.path.decode('utf-8', 'replace')}: it needs the {endpoint.role} role",
                )
        self._check_size(request)
        return identity

    def _check_size(self, request: IRequest) -> None:
        """
        413 for a body over C{max_body}.  The site's request class
        (L{LimitedRequest}) already refuses one on a real connection before
        reading it; this catches what reaches the resource another way.
        """
        length = request.getHeader(b"content-length")
        size = None
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                raise HTTPError(400, "Content-Length is not a number") from None
        content = request.content
        if content is not None and getattr(content, "closed", False):
            # The client went away (Twisted closed the body): no one to answer.
            return
        if content is not None and hasattr(content, "seek"):
            here = content.tell()
            content.seek(0, 2)
            size = max(size or 0, content.tell())
            content.seek(here)
        if getattr(request, "body_too_large", False) or (size is not None and size > self.max_body):
            raise HTTPError(413, f"the request body is larger than {self.max_body} bytes")

    async def record(self, request: IRequest, identity: Identity | None, result: Any,
                     endpoint: Endpoint | None = None) -> None:
        """
        Write a change request (POST/PUT/DELETE by a known caller), or a call
        of an C{audited} endpoint (a console ticket), to the audit log.
        """
        method = request.method.decode("ascii", "replace")
        audited = method in AUDITED or (endpoint is not None and endpoint.audited)
        if self.users is None or identity is None or not audited:
            return
        task_id = None
        body = getattr(result, "body", None)
        if getattr(result, "code", None) == 202 and isinstance(body, dict):
            if str(body.get("href", "")).startswith("/tasks/"):
                task_id = body.get("id")
        now = int(self.clock.seconds()) if self.clock is not None else int(time.time())
        try:
            await self.users.audit(
                now, identity.name, method, request.uri.decode("utf-8", "replace"),
                request.code, task_id,
            )
        except Exception:
            log.failure("cannot write the audit log")
