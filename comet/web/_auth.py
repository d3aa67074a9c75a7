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
  - Failed attempts from one address slow that address down (L{Throttle}).
  - The role an endpoint needs is in the route table (L{Endpoint.role}).
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import attrs
from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from comet.credentials import verify_password
from comet.web._errors import HTTPError
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


def _unauthorized(reason: str) -> HTTPError:
    return HTTPError(401, reason, {"WWW-Authenticate": CHALLENGE})


class Throttle:
    """
    Slows down an address that keeps failing to authenticate: after C{free}
    failures, each request from it waits C{base * 2**k} seconds (at most
    C{cap}) before its credentials are even looked at.  An address is
    forgotten C{forget} seconds after its last failure; at most C{size}
    addresses are remembered (the oldest go first).
    """

    def __init__(self, clock, free: int = 3, base: float = 1.0, cap: float = 30.0,
                 forget: float = 600.0, size: int = 10000):
        self.clock = clock
        self.free = free
        self.base = base
        self.cap = cap
        self.forget = forget
        self.size = size
        #: address -> (failures, time of the last one)
        self._failures: dict[str, tuple[int, float]] = {}

    def delay(self, address: str) -> float:
        """Seconds a request from C{address} waits now."""
        entry = self._failures.get(address)
        if entry is None:
            return 0.0
        count, last = entry
        if self.clock.seconds() - last > self.forget:
            del self._failures[address]
            return 0.0
        if count < self.free or self.base <= 0:
            return 0.0
        return min(self.cap, self.base * 2 ** (count - self.free))

    def wait(self, address: str) -> Deferred:
        """Fires when a request from C{address} may be checked (on the clock, no sleep)."""
        delay = self.delay(address)
        if delay <= 0:
            return succeed(None)
        return deferLater(self.clock, delay, lambda: None)

    def failed(self, address: str) -> None:
        count, _ = self._failures.pop(address, (0, 0.0))
        if len(self._failures) >= self.size:
            del self._failures[next(iter(self._failures))]
        self._failures[address] = (count + 1, self.clock.seconds())


def client_address(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


class Authenticator:
    """
    Turns a request's C{Authorization} header into an L{Identity}, or a 401.

    @param users: L{comet.store.users.Users}.
    @param enabled: C{False} (C{[api] auth = false}): every caller is the
        admin C{anonymous}.
    """

    def __init__(self, users, clock=None, throttle: Throttle | None = None,
                 enabled: bool = True):
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.users = users
        self.clock = clock
        self.throttle = throttle if throttle is not None else Throttle(clock)
        self.enabled = enabled

    async def identify(self, request: IRequest) -> Identity:
        if not self.enabled:
            return Identity("anonymous", ADMIN)
        header = request.getHeader(b"authorization")
        if header is None:
            raise _unauthorized("credentials are required: a Bearer token or Basic user and password")
        address = client_address(request)
        await self.throttle.wait(address)
        identity = await self._check(header)
        if identity is None:
            self.throttle.failed(address)
            log.warn("failed authentication from {address}", address=address)
            raise _unauthorized("wrong user name, password or token")
        return identity

    async def _check(self, header: bytes) -> Identity | None:
        scheme, _, value = header.decode("latin-1").strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and value:
            user = await self.users.by_token(value)
            return Identity(user.name, user.role) if user is not None else None
        if scheme == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ":"
            name, _, password = decoded.partition(":")
            user = await self.users.get(name) if name else None
            stored = user.password if user is not None else None
            # The same scrypt work whether or not the user exists.
            ok = await threads.deferToThread(verify_password, password, stored)
            return Identity(user.name, user.role) if ok and user is not None else None
        return None


class Guard:
    """
    What L{serve} does around a handler: admit (401, 403, 413) and record (the
    audit log).

    @param authenticator: an L{Authenticator}, or anything with an C{async
        identify(request)}.
    @param users: where the audit log goes (C{None}: nowhere, for tests of
        the pipeline alone).
    """

    def __init__(self, authenticator, users=None, max_body: int = 1024 * 1024, clock=None):
        self.authenticator = authenticator
        self.users = users
        self.max_body = max_body
        self.clock = clock

    async def identify(self, request: IRequest) -> Identity:
        return await self.authenticator.identify(request)

    async def admit(self, request: IRequest, endpoint: Endpoint) -> Identity | None:
        """The caller's identity once it may call C{endpoint}; else raise 401/403/413."""
        identity = None
        if endpoint.role not in (PUBLIC, TICKET):
            identity = await self.identify(request)
            # Known before the role check, so a 403 is audited with its user.
            request.comet_identity = identity
            if not allows(identity.role, endpoint.role):
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
        if content is not None and hasattr(content, "seek"):
            here = content.tell()
            content.seek(0, 2)
            size = max(size or 0, content.tell())
            content.seek(here)
        if getattr(request, "body_too_large", False) or (size is not None and size > self.max_body):
            raise HTTPError(413, f"the request body is larger than {self.max_body} bytes")

    async def record(self, request: IRequest, identity: Identity | None, result: Any) -> None:
        """Write a change request (POST/PUT/DELETE by a known caller) to the audit log."""
        method = request.method.decode("ascii", "replace")
        if self.users is None or identity is None or method not in AUDITED:
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
