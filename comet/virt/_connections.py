"""
The connection half of L{comet.virt.Hypervisors}: each compute host's one
libvirt connection, opened in the service's pool, given up on when a call
takes too long or libvirt says it closed, and opened again after a back-off
(1 s, doubling after each failed attempt, at most 60 s); calls run on it in
the pool, their errors translated; libvirt's lifecycle and close events are
handed to the reactor thread.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs
import libvirt
from twisted.internet.defer import Deferred, DeferredSemaphore, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from comet.config import HostConfig
from comet.errors import NotFound, Unavailable
from comet.virt._batches import PoolStopped
from comet.virt._deadlines import _ProbeDeadlines
from comet.virt._errors import ConnectionLost, translate
from comet.virt._eventloop import lifecycle_event_name
from comet.virt._values import CONNECTED, UNREACHABLE

_log = Logger()

#: Calls one host may have in the thread pool at once.
CALLS_PER_HOST = 4
#: First and longest wait, in seconds, before reconnecting to a host that
#: failed; the wait doubles after each failed attempt.
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 60.0
#: Libvirt keepalive for remote connections: a ping every 5 s, and the
#: connection is closed after 3 unanswered ones.
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3

_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "connection error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "connection closed by the host",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timed out",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by Comet",
}


@attrs.define(eq=False)
class _Connection:
    """
    An open connection and what was registered on it, with the calls running
    on it now: it is closed only once none is (closing a C{virConnect} while
    another thread is inside a call on it is not safe).
    """

    conn: Any
    event_id: int | None
    running: int = 0
    close_when_idle: Deferred | None = None


@attrs.define(eq=False)
class _Attempt:
    """A connection being opened, and the calls waiting for it."""

    waiters: list[Deferred] = attrs.Factory(list)


@attrs.define(eq=False)
class _Host:
    """One compute host's connection state; touched only in the reactor thread."""

    config: HostConfig
    slots: DeferredSemaphore
    connection: _Connection | None = None
    attempt: _Attempt | None = None
    reason: str = "not connected yet"
    #: Seconds to wait after the last failure; 0 after a success.
    backoff: float = 0.0
    #: Clock time before which no new connection is tried.
    next_attempt: float = 0.0
    #: The retry scheduled for C{next_attempt}, if any.
    retry: Any = None

    @property
    def state(self) -> str:
        return CONNECTED if self.connection is not None else UNREACHABLE


class _HostConnections(_ProbeDeadlines):
    """
    Mixed into L{Hypervisors}, whose constructor makes the state these
    methods share with its operations (C{_hosts}, C{_pool}, C{_clock}, ...).
    """

    # Hosts a configuration reload adds and removes ---------------------------

    def add_host(self, config: HostConfig, calls_per_host: int = CALLS_PER_HOST) -> None:
        """
        Add a compute host (a configuration reload): it is connected at once
        if the service runs, like the hosts it started with.

        @raise ValueError: a host of that name exists.
        """
        if config.name in self._hosts:
            raise ValueError(f"compute host {config.name!r} exists")
        host = self._hosts[config.name] = _Host(
            config=config, slots=DeferredSemaphore(calls_per_host))
        self._probe_pool.adjustPoolsize(maxthreads=max(2, 2 * len(self._hosts)))
        if self.running and not self._stopping:
            self._connected(host).addErrback(lambda _: None)

    def remove_host(self, name: str) -> Deferred[None]:
        """
        Forget compute host C{name} (a configuration reload): its retries
        stop, a connection being opened is given up on, and its connection
        is closed once the calls running on it end (they finish; new ones
        answer L{NotFound}).  Host subscribers hear C{removed}.  Fires once
        the connection is closed.

        @raise NotFound: there is no such host.
        """
        host = self._host(name)
        del self._hosts[name]
        self._cancel_retry(host)
        attempt, host.attempt = host.attempt, None
        if attempt is not None:
            # Its connection, when it opens, is closed (L{_opened}).
            for waiter in attempt.waiters:
                waiter.errback(self._unavailable(host, "the host was removed"))
        closed = succeed(None)
        if host.connection is not None:
            closed = self._close_in_pool(host.connection)
            host.connection = None
        host.reason = "the host was removed"
        for callback in list(self._host_subscribers):
            try:
                callback(name, "removed", host.reason)
            except Exception:
                _log.failure("host subscriber {callback} failed", callback=callback)
        return closed

    # Machinery ---------------------------------------------------------------

    def _host(self, name: str) -> _Host:
        try:
            return self._hosts[name]
        except KeyError:
            raise NotFound(f"there is no compute host {name!r}") from None

    def _unavailable(self, host: _Host, detail: str) -> Unavailable:
        return Unavailable(
            f"compute host {host.config.name!r} ({host.config.uri}) does not answer: {detail}"
        )

    def _domain_call(self, host: str, name: str, doing: str, op, *args) -> Deferred:
        return self._call(
            host, f"{doing} domain {name!r} on {host!r}", op, name, *args
        )

    def _call(self, host_name: str, what: str, op, *args, probe: bool = False,
              timeout: float | None = None) -> Deferred:
        """
        Run C{op(conn, host_name, *args)} in the pool on C{host_name}'s
        connection, within the call timeout (or C{timeout} seconds, for a
        call that is long by nature: a migration).  With C{probe}, in the
        probe pool and without taking one of the host's slots.
        """
        try:
            host = self._host(host_name)
        except NotFound:
            return fail()
        used: list[_Connection] = []
        if probe:
            return self._with_deadline(self._probe(host, what, op, args, used), host, what, used)
        d = Deferred.fromCoroutine(self._run(host, what, op, args, used))
        d.addTimeout(
            self._timeout if timeout is None else timeout,
            self._clock,
            onTimeoutCancel=functools.partial(self._timed_out, host, what, used),
        )
        return d

    async def _run(self, host: _Host, what: str, op, args, used: list[_Connection]):
        if self._stopping:
            raise self._unavailable(host, "Comet is stopping")
        connection = await self._connected(host)
        used.append(connection)
        await host.slots.acquire()
        connection.running += 1
        try:
            return await deferToThreadPool(
                self._reactor, self._pool, self._in_thread, host, connection, what, op, args,
            )
        except ConnectionLost as e:
            self._lost(host, connection, e.detail)
            raise self._unavailable(host, e.detail) from None

    def _probe(self, host: _Host, what: str, op, args, used: list[_Connection]) -> Deferred:
        """
        L{_run} for a probe: no slot, and run with the other probes of this
        reactor turn, one hand-off for them all (L{comet.virt._batches}).  A
        plain chain of callbacks, not a coroutine: C{GET /cluster} makes one
        per host.
        """
        if self._stopping:
            return fail(self._unavailable(host, "Comet is stopping"))
        if host.connection is None:
            return self._connected(host).addCallback(
                lambda connection: self._probe_on(host, connection, what, op, args, used))
        return self._probe_on(host, host.connection, what, op, args, used)

    def _probe_on(self, host: _Host, connection: _Connection, what: str, op, args,
                  used: list[_Connection]) -> Deferred:
        used.append(connection)
        connection.running += 1
        d = self._probes.run(
            host.config.name, self._in_thread, host, connection, what, op, args, True,
            ended=functools.partial(self._call_ended, connection),
        )
        return d.addErrback(self._probe_failed, host, connection)

    def _probe_failed(self, failure: Failure, host: _Host, connection: _Connection):
        if failure.check(PoolStopped):
            raise self._unavailable(host, "Comet is stopping")
        failure.trap(ConnectionLost)
        self._lost(host, connection, failure.value.detail)
        raise self._unavailable(host, failure.value.detail)

    def _in_thread(self, host: _Host, connection: _Connection, what: str, op, args,
                   probe: bool = False):
        """Run in a pool thread: the libvirt call, its errors translated."""
        try:
            return op(connection.conn, host.config.name, *args)
        except libvirt.libvirtError as e:
            raise translate(e, connection.conn, what) from None
        finally:
            # The slot is free only once the thread is: a call that timed out
            # still holds its thread until libvirt returns.  So is the
            # connection (its close waits for it); a probe's batch says when
            # its thread is free (its C{ended}).
            if not probe:
                self._reactor.callFromThread(host.slots.release)
                self._reactor.callFromThread(self._call_ended, connection)

    def _call_ended(self, connection: _Connection) -> None:
        connection.running -= 1
        if connection.running == 0 and connection.close_when_idle is not None:
            closing, connection.close_when_idle = connection.close_when_idle, None
            self._close_now(connection).chainDeferred(closing)

    def _timed_out(
        self, host: _Host, what: str, used: list[_Connection], result, timeout: float
    ) -> Failure:
        """
        A call took too long: its connection (if it got one; if not, the
        connection attempt times out by itself) is given up on.
        """
        detail = f"{what} took longer than {timeout:g} s"
        for connection in used:
            self._lost(host, connection, detail)
        return Failure(self._unavailable(host, detail))

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
        timer = self._clock.callLater(self._timeout, self._open_timed_out, host, attempt)
        d = deferToThreadPool(self._reactor, self._pool, self._open_in_thread, host.config)
        d.addCallbacks(
            self._opened,
            self._open_failed,
            callbackArgs=(host, attempt, timer),
            errbackArgs=(host, attempt, timer),
        )

    def _open_in_thread(self, config: HostConfig) -> _Connection:
        """Run in a pool thread: open, and register for events and closing."""
        try:
            conn = self._open_connection(config.uri)
        except libvirt.libvirtError as e:
            raise ConnectionLost(e.get_error_message() or str(e)) from None
        if conn is None:
            raise ConnectionLost("libvirt could not open the connection")
        connection = _Connection(conn=conn, event_id=None)
        try:
            connection.event_id = conn.domainEventRegisterAny(
                None,
                libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                self._on_lifecycle,
                config.name,
            )
            _optional(conn.registerCloseCallback, self._on_close, (config.name, connection))
            _optional(conn.setKeepAlive, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except libvirt.libvirtError as e:
            _close(connection)
            raise ConnectionLost(e.get_error_message() or str(e)) from None
        return connection

    def _opened(self, connection: _Connection, host: _Host, attempt: _Attempt, timer) -> None:
        if timer.active():
            timer.cancel()
        if host.attempt is not attempt or self._stopping:
            # Given up on (timed out) or shutting down: not wanted any more.
            self._close_in_pool(connection)
            if host.attempt is attempt:
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

    def _open_failed(self, failure: Failure, host: _Host, attempt: _Attempt, timer) -> None:
        if timer.active():
            timer.cancel()
        if host.attempt is not attempt:
            return
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
        host.reason = detail
        host.backoff = min(max(host.backoff * 2, INITIAL_BACKOFF), MAX_BACKOFF)
        host.next_attempt = self._clock.seconds() + host.backoff
        self._schedule_retry(host)
        _log.warn(
            "compute host {host} ({uri}) unreachable: {reason}; next try in {backoff} s",
            host=host.config.name,
            uri=host.config.uri,
            reason=detail,
            backoff=host.backoff,
        )
        for waiter in attempt.waiters:
            waiter.errback(self._unavailable(host, detail))

    def _lost(self, host: _Host, connection: _Connection, detail: str) -> None:
        """
        C{connection} is broken.  If it is still the host's, drop it: the
        host is unreachable until the next attempt, after the first back-off.
        """
        if host.connection is not connection:
            return
        host.connection = None
        host.reason = detail
        host.backoff = INITIAL_BACKOFF
        host.next_attempt = self._clock.seconds() + host.backoff
        self._schedule_retry(host)
        _log.warn(
            "compute host {host} ({uri}) lost: {reason}",
            host=host.config.name,
            uri=host.config.uri,
            reason=detail,
        )
        self._close_in_pool(connection)
        self._host_changed(host)

    def _close_in_pool(self, connection: _Connection) -> Deferred:
        """Close C{connection} in the pool, once no call runs on it."""
        if connection.running:
            if connection.close_when_idle is None:
                connection.close_when_idle = Deferred()
            return connection.close_when_idle
        return self._close_now(connection)

    def _close_now(self, connection: _Connection) -> Deferred:
        return deferToThreadPool(self._reactor, self._pool, _close, connection).addErrback(
            lambda f: _log.failure("closing a libvirt connection failed", f)
        )

    def _schedule_retry(self, host: _Host) -> None:
        """
        Try C{host} again once its back-off is over, even if nothing calls it,
        so that it comes back (and its events flow again) by itself.
        """
        self._cancel_retry(host)
        if not self._stopping:
            host.retry = self._clock.callLater(host.backoff, self._retry, host)

    def _cancel_retry(self, host: _Host) -> None:
        if host.retry is not None and host.retry.active():
            host.retry.cancel()
        host.retry = None

    def _retry(self, host: _Host) -> None:
        host.retry = None
        if host.connection is None and host.attempt is None and not self._stopping:
            self._connected(host).addErrback(lambda _: None)

    def _host_changed(self, host: _Host) -> None:
        status = self.status(host.config.name)
        for callback in list(self._host_subscribers):
            try:
                callback(status.name, status.state, status.reason)
            except Exception:
                _log.failure("host subscriber {callback} failed", callback=callback)

    # Libvirt's event thread --------------------------------------------------

    def _on_lifecycle(self, conn, dom, event, detail, host_name) -> None:
        """Run in libvirt's event thread: hand the event to the reactor."""
        self._reactor.callFromThread(
            self._deliver, host_name, dom.name(), lifecycle_event_name(event)
        )

    def _on_close(self, conn, reason, opaque) -> None:
        """Run in libvirt's event thread: the connection closed under us."""
        if reason == libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT:
            return
        host_name, connection = opaque
        self._reactor.callFromThread(
            self._closed, host_name, connection, _CLOSE_REASONS.get(reason, f"closed ({reason})")
        )

    def _closed(self, host_name: str, connection: _Connection, detail: str) -> None:
        host = self._hosts.get(host_name)
        if host is not None:  # not removed meanwhile (a reload)
            self._lost(host, connection, detail)

    def _deliver(self, host: str, domain: str, event: str) -> None:
        for callback in list(self._subscribers):
            try:
                callback(host, domain, event)
            except Exception:
                _log.failure("event subscriber {callback} failed", callback=callback)


def _optional(method, *args) -> None:
    """Call a libvirt method that some drivers lack (keepalive on local ones)."""
    try:
        method(*args)
    except libvirt.libvirtError as e:
        if e.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            raise


def _close(connection: _Connection) -> None:
    """Run in a pool thread: unregister everything, then close."""
    conn = connection.conn
    steps = [conn.unregisterCloseCallback, conn.close]
    if connection.event_id is not None:
        steps.insert(0, functools.partial(conn.domainEventDeregisterAny, connection.event_id))
    for step in steps:
        try:
            step()
        except libvirt.libvirtError:
            pass
