"""
The opening half of L{comet.virt.Hypervisors}' connections, mixed into
L{comet.virt._connections._HostConnections}: a host's connection attempt,
its timeout, and the one pool thread at most that opens a connection to a
host at a time (an opening the host does not answer in time goes on in its
thread; a later attempt waits for it rather than stacking another thread on
a host that does not answer, and takes the connection if it comes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import libvirt
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from comet.config import HostConfig
from comet.virt._errors import ConnectionLost
from comet.virt._sessions import _Connection
from comet.virt._sessions import close as _close
from comet.virt._sessions import optional as _optional

if TYPE_CHECKING:
    from comet.virt._connections import _Host

_log = Logger()

#: First and longest wait, in seconds, before reconnecting to a host that
#: failed; the wait doubles after each failed attempt.
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 60.0
#: Libvirt keepalive for remote connections: a ping every 5 s, and the
#: connection is closed after 3 unanswered ones.
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3


@attrs.define(eq=False)
class _Attempt:
    """A connection being opened, and the calls waiting for it."""

    waiters: list[Deferred] = attrs.Factory(list)
    #: Fails the attempt after the call timeout.
    timer: Any = None



class _Opening:
    """
    Mixed in; the connection half gives C{_hosts}, C{_pool}, C{_clock},
    C{_timeout}, C{_close_in_pool}, the retries and C{_host_changed}.
    """

    def _connected(self, host: _Host) -> Deferred[_Connection]:
        """
        The host's connection; a new one if it has none and its back-off is
        over; L{Unavailable} at once otherwise.
        """
        if host.connection is not None:
            return succeed(host.connection)
        if self._stopping:
            return fail(self._unavailable(host, "Comet is stopping"))
        if host.attempt is None:
            if self._clock.seconds() < host.next_attempt:
                return fail(self._unavailable(host, host.reason))
            self._open(host)
        waiter: Deferred[_Connection] = Deferred()
        host.attempt.waiters.append(waiter)
        return waiter

    def _open(self, host: _Host) -> None:
        attempt = host.attempt = _Attempt()
        attempt.timer = self._clock.callLater(self._timeout, self._open_timed_out, host, attempt)
        if host.opening:
            # An earlier attempt's opening has not returned (the host did not
            # answer it in time): this attempt waits for it, rather than
            # stacking one more pool thread on a host that does not answer.
            return
        host.opening = True
        d = deferToThreadPool(self._reactor, self._pool, self._open_in_thread, host.config)
        d.addCallbacks(self._opened, self._open_failed, callbackArgs=(host,), errbackArgs=(host,))

    def _open_in_thread(self, config: HostConfig) -> _Connection:
        """Run in a pool thread: open, and register for events and closing."""
        try:
            conn = self._open_connection(config.uri)
        except libvirt.libvirtError as e:
            raise ConnectionLost(e.get_error_message() or str(e)) from None
        if conn is None:
            raise ConnectionLost("libvirt could not open the connection")
        connection = _Connection(conn=conn, event_id=None, uri=config.uri,
                                 exclusive=self._exclusive(config.uri))
        try:
            connection.event_id = conn.domainEventRegisterAny(
                None,
                libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                self._on_lifecycle,
                config.name,
            )
            _optional(conn.registerCloseCallback, self._on_close, (config.name, connection))
            _optional(conn.setKeepAlive, *self._keepalive)
        except libvirt.libvirtError as e:
            _close(connection)
            raise ConnectionLost(e.get_error_message() or str(e)) from None
        return connection

    def _opened(self, connection: _Connection, host: _Host) -> None:
        """
        A connection opened: it serves the host's attempt now (the one that
        began the opening, or a later one that waited for it).
        """
        host.opening = False
        attempt = host.attempt
        if attempt is not None and attempt.timer.active():
            attempt.timer.cancel()
        if attempt is None or self._stopping:
            # No attempt waits (given up on, the host removed) or shutting
            # down: not wanted any more.
            self._close_in_pool(connection)
            if attempt is not None:
                self._attempt_failed(host, attempt, "Comet is stopping")
            return
        host.attempt = None
        host.connection = connection
        self._cancel_retry(host)
        host.backoff = 0.0
        host.reason = ""
        _log.info(
            "compute host {host} ({uri}) connected", host=host.config.name, uri=host.config.uri
        )
        self._host_changed(host)
        for waiter in attempt.waiters:
            waiter.callback(connection)

    def _open_failed(self, failure: Failure, host: _Host) -> None:
        host.opening = False
        attempt = host.attempt
        if attempt is None:
            return
        if attempt.timer.active():
            attempt.timer.cancel()
        if failure.check(ConnectionLost):
            detail = failure.value.detail
        else:
            _log.failure("opening a connection to {uri} failed", failure, uri=host.config.uri)
            detail = "the connection could not be opened"
        self._attempt_failed(host, attempt, detail)

    def _open_timed_out(self, host: _Host, attempt: _Attempt) -> None:
        if host.attempt is attempt:
            self._attempt_failed(
                host, attempt, f"connecting took longer than {self._timeout:g} s"
            )

    def _attempt_failed(self, host: _Host, attempt: _Attempt, detail: str) -> None:
        host.attempt = None
        self._retry_after(host, detail, min(max(host.backoff * 2, INITIAL_BACKOFF), MAX_BACKOFF))
        _log.warn(
            "compute host {host} ({uri}) unreachable: {reason}; next try in {backoff} s",
            host=host.config.name,
            uri=host.config.uri,
            reason=detail,
            backoff=host.backoff,
        )
        for waiter in attempt.waiters:
            waiter.errback(self._unavailable(host, detail))

    def _open_spare(self, connection: _Connection):
        """
        Run in a pool thread: one more connection to C{connection}'s host,
        for a call to run beside the others (L{comet.virt._sessions}).
        """
        try:
            conn = self._open_connection(connection.uri)
            if conn is None:
                raise ConnectionLost("libvirt could not open the connection")
            _optional(conn.setKeepAlive, *self._keepalive)
        except libvirt.libvirtError as e:
            raise ConnectionLost(e.get_error_message() or str(e)) from None
        return conn
