"""
The connection half of L{comet.virt.Hypervisors}: each compute host's
connection, opened in the service's pool (L{comet.virt._opening}), given up
on when a call takes too long or libvirt says it closed, and opened again
after a back-off (1 s, doubling after each failed attempt, at most 60 s);
calls run on it in the pool, each on a C{virConnect} of its own while it
runs (L{comet.virt._sessions}), their errors translated; libvirt's
lifecycle and close events are handed to the reactor thread.
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
from comet.virt._deferreds import after
from comet.virt._deadlines import _ProbeDeadlines
from comet.virt._errors import ConnectionLost, translate
from comet.virt._eventloop import lifecycle_event_name
from comet.virt._opening import INITIAL_BACKOFF, _Attempt, _Opening
from comet.virt._sessions import _Connection, _Lease
from comet.virt._sessions import close as _close
from comet.virt._values import CONNECTED, UNREACHABLE

_log = Logger()

#: Calls one host may have in the thread pool at once.
CALLS_PER_HOST = 4

_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "connection error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "connection closed by the host",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timed out",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by Comet",
}


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
    #: Whether a pool thread is opening a connection to it now (one at most).
    opening: bool = False

    @property
    def state(self) -> str:
        return CONNECTED if self.connection is not None else UNREACHABLE


class _HostConnections(_Opening, _ProbeDeadlines):
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
              timeout: float | None = None, extra=()) -> Deferred:
        """
        Run C{op(conn, host_name, *args)} in the pool on a connection of
        C{host_name}'s of its own (L{_Connection.take}), within the call
        timeout (or C{timeout} seconds, for a call that is long by nature: a
        migration).  With C{probe}, in the probe pool and without taking one
        of the host's slots.  C{extra}: C{(connection, lease)} of other
        hosts' the call also uses, given back when it returns.
        """
        try:
            host = self._host(host_name)
        except NotFound:
            for connection, lease in extra:
                self._call_ended(connection, lease)
            return fail()
        used: list[_Connection] = []
        if probe:
            return self._with_deadline(self._probe(host, what, op, args, used), host, what, used)
        d = Deferred.fromCoroutine(self._run(host, what, op, args, used, extra))
        d.addTimeout(
            self._timeout if timeout is None else timeout,
            self._clock,
            onTimeoutCancel=functools.partial(self._timed_out, host, what, used),
        )
        return d

    async def _run(self, host: _Host, what: str, op, args, used: list[_Connection], extra=()):
        handed = False
        try:
            if self._stopping:
                raise self._unavailable(host, "Comet is stopping")
            connection = await self._connected(host)
            used.append(connection)
            await host.slots.acquire()
            if connection.dropped:
                # Given up on while this call waited for its slot: it is
                # being closed, so the call must not begin on it.
                host.slots.release()
                raise self._unavailable(host, host.reason)
            lease = connection.take()
            connection.running += 1
            d = deferToThreadPool(
                self._reactor, self._pool, self._in_thread, host, connection, lease, what, op,
                args, False, extra,
            )
            handed = True
        finally:
            if not handed:
                for other, other_lease in extra:
                    self._call_ended(other, other_lease)
        try:
            return await d
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
        if connection.dropped:
            return fail(self._unavailable(host, host.reason))
        used.append(connection)
        lease = connection.take()
        connection.running += 1
        d = self._probes.run(
            host.config.name, self._in_thread, host, connection, lease, what, op, args, True,
            ended=functools.partial(self._call_ended, connection, lease),
        )
        return d.addErrback(self._probe_failed, host, connection)

    def _probe_failed(self, failure: Failure, host: _Host, connection: _Connection):
        if failure.check(PoolStopped):
            raise self._unavailable(host, "Comet is stopping")
        failure.trap(ConnectionLost)
        self._lost(host, connection, failure.value.detail)
        raise self._unavailable(host, failure.value.detail)

    def _in_thread(self, host: _Host, connection: _Connection, lease: _Lease, what: str, op,
                   args, probe: bool = False, extra=()):
        """
        Run in a pool thread: the libvirt call on the lease's connection (a
        spare one opened first if none was free), its errors translated.
        """
        try:
            if lease.conn is None:
                lease.conn, lease.opened = self._open_spare(connection), True
            for other, other_lease in extra:
                if other_lease.conn is None:
                    try:
                        other_lease.conn, other_lease.opened = self._open_spare(other), True
                    except ConnectionLost as e:  # the other host's, not this one's
                        raise Unavailable(f"{other.uri} does not answer: {e.detail}") from None
            return op(lease.conn, host.config.name, *args)
        except libvirt.libvirtError as e:
            raise translate(e, lease.conn, what) from None
        finally:
            # The slot is free only once the thread is: a call that timed out
            # still holds its thread until libvirt returns.  So are the
            # connections (their close waits for them); a probe's batch says
            # when its thread is free (its C{ended}).
            if not probe:
                self._reactor.callFromThread(host.slots.release)
                self._reactor.callFromThread(self._call_ended, connection, lease)
            for other, other_lease in extra:
                self._reactor.callFromThread(self._call_ended, other, other_lease)

    def _call_ended(self, connection: _Connection, lease: _Lease) -> None:
        connection.running -= 1
        connection.give_back(lease)
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

    def _lost(self, host: _Host, connection: _Connection, detail: str) -> None:
        """
        C{connection} is broken.  If it is still the host's, drop it: the
        host is unreachable until the next attempt, after the first back-off.
        """
        if host.connection is not connection:
            return
        host.connection = None
        self._retry_after(host, detail, INITIAL_BACKOFF)
        _log.warn(
            "compute host {host} ({uri}) lost: {reason}",
            host=host.config.name,
            uri=host.config.uri,
            reason=detail,
        )
        self._close_in_pool(connection)
        self._host_changed(host)

    def _close_in_pool(self, connection: _Connection) -> Deferred:
        """
        Close C{connection} in the pool once no call runs on it; no call
        begins on it any more.  It is closed once, however often asked.
        """
        connection.dropped = True
        if connection.closed is None:
            if connection.running:
                connection.close_when_idle = Deferred()
                connection.closed = connection.close_when_idle
            else:
                connection.closed = self._close_now(connection)
        return after(connection.closed)

    def _close_now(self, connection: _Connection) -> Deferred:
        return deferToThreadPool(self._reactor, self._pool, _close, connection).addErrback(
            lambda f: _log.failure("closing a libvirt connection failed", f)
        )

    def _retry_after(self, host: _Host, reason: str, backoff: float) -> None:
        """
        C{host} is unreachable for C{reason}: its calls fail at once for
        C{backoff} seconds, then it is tried again, even if nothing calls it,
        so that it comes back (and its events flow again) by itself.
        """
        host.reason = reason
        host.backoff = backoff
        host.next_attempt = self._clock.seconds() + backoff
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
