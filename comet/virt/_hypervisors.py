"""
L{Hypervisors}: Comet's connections to its compute hosts.

Libvirt's API blocks.  Every call therefore runs in a thread pool of the
service's own, never in the reactor thread, and answers with a L{Deferred}.
Each configured host has one connection, opened in that pool; at most
C{calls_per_host} calls per host are in the pool at once, so a slow host cannot
take every thread.

A host that does not answer is I{unreachable}: its calls fail at once with
L{Unavailable} until a back-off has passed (1 s, doubling after each failed
attempt, at most 60 s); then the next call, or a retry scheduled for that
moment, opens a new connection.  No timer runs while every host is connected.  A call that takes longer than
C{libvirt_timeout} answers L{Unavailable} at that time and marks its host
unreachable; its thread may finish later, and its result is dropped.

Libvirt reports lifecycle events and closed connections in its event-loop
thread (see L{comet.virt._eventloop}); both reach Comet in the reactor thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs
import libvirt
from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredSemaphore,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from comet.config import ComputeConfig, HostConfig
from comet.errors import NotFound, Unavailable
from comet.virt import _operations, domainxml
from comet.virt._errors import ConnectionLost, translate
from comet.virt._eventloop import ensure_event_loop, lifecycle_event_name
from comet.virt._values import (
    CONNECTED,
    UNREACHABLE,
    DomainInfo,
    GraphicsAddress,
    HostStatus,
    NodeInfo,
    OwnedDomain,
)

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


class Hypervisors(Service):
    """
    The compute hosts of the configuration, each behind one libvirt connection.

    Every operation names its host by the configured name and answers with a
    L{Deferred}.  Each fails with:
      - L{NotFound} for an unknown host, or a domain (or secret) the host does
        not have;
      - L{Unavailable} when the host does not answer (now, or within
        C{libvirt_timeout} seconds);
      - L{Conflict} when the domain's state forbids the operation (the reason
        names the state);
      - L{InvalidInput} for arguments no host could accept;
      - L{HypervisorError} for any other refusal, with libvirt's reason.

    @param reactor: provides C{callFromThread} and C{callLater}.
    @param hosts: the configured compute hosts.
    @param compute: the size of the thread pool and the call timeout.
    @param clock: schedules timeouts, back-offs and retries (the reactor by
        default; a L{twisted.internet.task.Clock} in tests).
    @param open_connection: opens a connection to a URI, in a pool thread
        (C{libvirt.open} by default; tests wrap it).
    """

    name = "libvirt"

    def __init__(
        self,
        reactor,
        hosts: tuple[HostConfig, ...],
        compute: ComputeConfig,
        *,
        clock=None,
        open_connection: Callable[[str], Any] = libvirt.open,
        calls_per_host: int = CALLS_PER_HOST,
    ):
        ensure_event_loop()
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._timeout = compute.libvirt_timeout
        self._open_connection = open_connection
        self._threads = compute.libvirt_threads
        self._pool = self._new_pool()
        self._probe_pool = self._new_probe_pool(len(hosts))
        self._hosts = {
            h.name: _Host(config=h, slots=DeferredSemaphore(calls_per_host))
            for h in hosts
        }
        self._subscribers: list[Callable[[str, str, str], object]] = []
        self._host_subscribers: list[Callable[[str, str, str], object]] = []
        self._stopping = False

    # Service ---------------------------------------------------------------

    def _new_pool(self) -> ThreadPool:
        return ThreadPool(minthreads=0, maxthreads=self._threads, name="comet-libvirt")

    def _new_probe_pool(self, hosts: int) -> ThreadPool:
        # Two threads a host: one probe at a time per host, plus one stuck in
        # a host that stopped answering (its thread returns only when libvirt
        # gives up on the host).
        return ThreadPool(minthreads=0, maxthreads=max(2, 2 * hosts), name="comet-libvirt-probe")

    def startService(self) -> None:
        """Start the thread pools and connect to every host."""
        super().startService()
        self._stopping = False
        if self._pool.joined:
            # A stopped pool cannot start again.
            self._pool = self._new_pool()
        if self._probe_pool.joined:
            self._probe_pool = self._new_probe_pool(len(self._hosts))
        self._pool.start()
        self._probe_pool.start()
        self.connect()

    def stopService(self) -> Deferred:
        """Close every connection, then stop the thread pool."""
        if not self.running:
            return succeed(None)
        super().stopService()
        self._stopping = True
        closing = []
        for host in self._hosts.values():
            self._cancel_retry(host)
            if host.connection is not None:
                closing.append(self._close_in_pool(host.connection))
                host.connection = None
                host.reason = "Comet is stopping"

        pool, probe_pool = self._pool, self._probe_pool

        def stop_pool(_):
            # Joins the pool's threads: a call stuck in libvirt delays this
            # until libvirt gives up on its host (keepalive).
            pool.stop()
            probe_pool.stop()

        return gatherResults(closing).addBoth(stop_pool)

    def connect(self) -> Deferred:
        """
        Connect to every host not connected yet (also done by
        C{startService}).  Fires, never fails, with the hosts' L{HostStatus}
        once every attempt has ended.
        """
        attempts = [
            self._connected(host).addErrback(lambda _: None)
            for host in self._hosts.values()
        ]
        return gatherResults(attempts).addCallback(lambda _: self.statuses())

    # Hosts -----------------------------------------------------------------

    @property
    def hosts(self) -> tuple[str, ...]:
        """The configured host names, in configuration order."""
        return tuple(self._hosts)

    def status(self, host: str) -> HostStatus:
        """
        Whether C{host} is connected, without asking it.

        @raise NotFound: for an unknown host.
        """
        h = self._host(host)
        return HostStatus(
            name=host,
            uri=h.config.uri,
            state=h.state,
            reason="" if h.connection is not None else h.reason,
        )

    def statuses(self) -> tuple[HostStatus, ...]:
        return tuple(self.status(name) for name in self._hosts)

    # Events ----------------------------------------------------------------

    def subscribe(self, callback: Callable[[str, str, str], object]) -> Callable[[], None]:
        """
        Call C{callback(host, domain, event)} in the reactor thread for every
        lifecycle event of every domain on every host: C{event} is one of
        C{defined}, C{undefined}, C{started}, C{suspended}, C{resumed},
        C{stopped}, C{shutdown}, C{pmsuspended}, C{crashed} (or C{other}).

        Events that happen while a host is unreachable are lost: subscribe to
        host changes (L{subscribe_hosts}) and read the host again when it comes
        back.

        @return: a function that ends the subscription.
        """
        return _subscribe(self._subscribers, callback)

    def subscribe_hosts(
        self, callback: Callable[[str, str, str], object]
    ) -> Callable[[], None]:
        """
        Call C{callback(host, state, reason)} in the reactor thread whenever a
        host becomes C{connected} or C{unreachable}.

        @return: a function that ends the subscription.
        """
        return _subscribe(self._host_subscribers, callback)

    # Operations --------------------------------------------------------------

    def node_info(self, host: str) -> Deferred[NodeInfo]:
        """The host's CPUs, memory (MiB), free memory (MiB) and domain counts."""
        return self._call(host, f"reading compute host {host!r}", _operations.node_info)

    def list_domains(self, host: str) -> Deferred[dict[str, DomainInfo]]:
        """
        Every domain on the host, Comet's or not, by name: state, memory (MiB),
        vCPUs, UUID.  One bulk libvirt call on QEMU (see
        L{_operations.list_domains}).
        """
        return self._call(host, f"listing domains of {host!r}", _operations.list_domains)

    def domain_states(self, host: str) -> Deferred[dict[str, str]]:
        """The state of every domain on the host, by name: one bulk call."""
        return self._call(host, f"listing domains of {host!r}", _operations.domain_states)

    def domains_with_metadata(self, host: str) -> Deferred[dict[str, OwnedDomain]]:
        """The domains on the host that Comet defined (they carry its metadata)."""
        return self._call(
            host, f"listing Comet's domains of {host!r}", _operations.domains_with_metadata
        )

    def ping(self, host: str) -> Deferred[None]:
        """
        Fires once the host has answered one cheap call, made now: whether it
        still answers (L{Unavailable} if not, within C{libvirt_timeout}, which
        also marks it unreachable).  It runs in a small pool of its own, not
        behind the host's other calls, so that a busy host still answers it
        at once.
        """
        return self._call(host, f"checking compute host {host!r}", _operations.ping,
                          probe=True)

    def domain_state(self, host: str, name: str) -> Deferred[str]:
        """C{running}, C{paused}, C{shutoff} or C{other}."""
        return self._domain_call(host, name, "reading", _operations.domain_state)

    def describe(
        self, host: str, name: str, secure: bool = False
    ) -> Deferred[domainxml.DomainDescription]:
        """
        The domain's live XML, parsed: its disks, Comet metadata, VNC port.
        With C{secure}, the VNC password is included.
        """
        return self._domain_call(host, name, "describing", _operations.describe, secure)

    def define(self, host: str, domain: domainxml.DomainSpec | str) -> Deferred[str]:
        """
        Define (or, same name and UUID, redefine) a persistent domain from a
        L{DomainSpec} or from domain XML.  Fires with its UUID.

        @raise Conflict: another domain has the name or the UUID.
        """
        xml = domainxml.domain_xml(domain) if isinstance(domain, domainxml.DomainSpec) else domain
        return self._call(host, f"defining a domain on {host!r}", _operations.define, xml)

    # Each action below fires with the domain's state read right after it.

    def start(self, host: str, name: str) -> Deferred[str]:
        """Start a shut-off domain (C{Conflict} unless shut off)."""
        return self._domain_call(host, name, "starting", _operations.start)

    def shutdown(self, host: str, name: str) -> Deferred[str]:
        """
        Press the guest's ACPI power button.  Fires once asked, not once the
        guest is off (it may ignore the request), with the state then
        (C{running} on QEMU); watch for the C{stopped} event or poll
        L{domain_state}.
        """
        return self._domain_call(host, name, "shutting down", _operations.shutdown)

    def destroy(self, host: str, name: str) -> Deferred[str]:
        """Power a running or paused domain off at once."""
        return self._domain_call(host, name, "powering off", _operations.destroy)

    def reset(self, host: str, name: str) -> Deferred[str]:
        """Reset a running or paused domain, like its reset button."""
        return self._domain_call(host, name, "resetting", _operations.reset)

    def suspend(self, host: str, name: str) -> Deferred[str]:
        """Pause a running domain (it keeps its memory on the host)."""
        return self._domain_call(host, name, "suspending", _operations.suspend)

    def resume(self, host: str, name: str) -> Deferred[str]:
        """Let a paused domain run again."""
        return self._domain_call(host, name, "resuming", _operations.resume)

    def undefine(self, host: str, name: str) -> Deferred[None]:
        """
        Remove a shut-off domain's definition with its managed save image,
        snapshot and checkpoint metadata and NVRAM (C{Conflict} while it runs).
        """
        return self._domain_call(host, name, "undefining", _operations.undefine)

    def screenshot(self, host: str, name: str) -> Deferred[bytes]:
        """The running domain's screen, always as PNG bytes."""
        return self._domain_call(host, name, "taking a screenshot of", _operations.screenshot)

    def graphics_address(self, host: str, name: str) -> Deferred[GraphicsAddress]:
        """Where the running domain's VNC display listens on its host."""
        return self._domain_call(
            host, name, "finding the display of", _operations.graphics_address
        )

    def set_vnc_password(self, host: str, name: str, password: str,
                         valid_to: float | None = None) -> Deferred[None]:
        """
        Change the running domain's VNC password, live only (1 to 8 printable
        ASCII characters, else L{InvalidInput}), valid until C{valid_to}
        (epoch seconds; C{None}: no limit).
        """
        return self._domain_call(
            host, name, "setting the VNC password of", _operations.set_vnc_password, password,
            valid_to,
        )

    def set_metadata(
        self, host: str, name: str, metadata: domainxml.CometMetadata | None
    ) -> Deferred[None]:
        """Replace Comet's metadata on a domain (C{None} removes it)."""
        return self._domain_call(
            host, name, "marking", _operations.set_metadata, metadata
        )

    def attach_device(
        self,
        host: str,
        name: str,
        device: domainxml.DiskSpec | str,
        live: bool | None = None,
        config: bool = True,
    ) -> Deferred[None]:
        """
        Attach a device (a L{DiskSpec} or device XML).  C{live}: to the running
        domain (C{None}: if it is running); C{config}: to its definition too.
        """
        xml = domainxml.disk_xml(device) if isinstance(device, domainxml.DiskSpec) else device
        return self._domain_call(
            host, name, "attaching a device to", _operations.attach_device, xml, live, config
        )

    def detach_device(
        self,
        host: str,
        name: str,
        device: domainxml.DiskSpec | str,
        live: bool | None = None,
        config: bool = True,
    ) -> Deferred[None]:
        """Detach a device; the arguments are those of L{attach_device}."""
        xml = domainxml.disk_xml(device) if isinstance(device, domainxml.DiskSpec) else device
        return self._domain_call(
            host, name, "detaching a device from", _operations.detach_device, xml, live, config
        )

    def define_secret(
        self, host: str, uuid: str, usage: str, value: bytes | str
    ) -> Deferred[str]:
        """
        Define a private, persistent iSCSI CHAP secret whose usage name is
        C{usage} (what a L{DiskSpec}'s C{secret_usage} names), with C{value}
        as its password.  Fires with its UUID.
        """
        if isinstance(value, str):
            value = value.encode("utf-8")
        return self._call(
            host,
            f"defining secret {uuid} on {host!r}",
            _operations.define_secret,
            uuid,
            usage,
            value,
        )

    def undefine_secret(self, host: str, uuid: str) -> Deferred[None]:
        """Remove a secret (C{NotFound} if the host has none with C{uuid})."""
        return self._call(
            host, f"undefining secret {uuid} on {host!r}", _operations.undefine_secret, uuid
        )

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

    def _call(self, host_name: str, what: str, op, *args, probe: bool = False) -> Deferred:
        """
        Run C{op(conn, host_name, *args)} in the pool on C{host_name}'s
        connection, within the call timeout.  With C{probe}, in the probe
        pool and without taking one of the host's slots.
        """
        try:
            host = self._host(host_name)
        except NotFound:
            return fail()
        used: list[_Connection] = []
        d = Deferred.fromCoroutine(self._run(host, what, op, args, used, probe))
        d.addTimeout(
            self._timeout,
            self._clock,
            onTimeoutCancel=functools.partial(self._timed_out, host, what, used),
        )
        return d

    async def _run(self, host: _Host, what: str, op, args, used: list[_Connection],
                   probe: bool = False):
        if self._stopping:
            raise self._unavailable(host, "Comet is stopping")
        connection = await self._connected(host)
        used.append(connection)
        if not probe:
            await host.slots.acquire()
        connection.running += 1
        try:
            return await deferToThreadPool(
                self._reactor,
                self._probe_pool if probe else self._pool,
                self._in_thread,
                host,
                connection,
                what,
                op,
                args,
                probe,
            )
        except ConnectionLost as e:
            self._lost(host, connection, e.detail)
            raise self._unavailable(host, e.detail) from None

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
            # connection (its close waits for it).
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
        self._lost(self._hosts[host_name], connection, detail)

    def _deliver(self, host: str, domain: str, event: str) -> None:
        for callback in list(self._subscribers):
            try:
                callback(host, domain, event)
            except Exception:
                _log.failure("event subscriber {callback} failed", callback=callback)


def _subscribe(callbacks: list, callback) -> Callable[[], None]:
    """Add C{callback} to C{callbacks}; a function that takes it out again."""
    callbacks.append(callback)

    def unsubscribe() -> None:
        if callback in callbacks:
            callbacks.remove(callback)

    return unsubscribe


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
