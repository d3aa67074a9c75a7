"""
L{Hypervisors}: Comet's connections to its compute hosts.

Libvirt's API blocks.  Every call therefore runs in a thread pool of the
service's own, never in the reactor thread, and answers with a L{Deferred}.
Each configured host has one connection, opened in that pool (its events
and close notification come on it); at most C{calls_per_host} calls per host
are in the pool at once, so a slow host cannot take every thread.  Through
libvirt's RPC client each of them runs on a C{virConnect} of its own (more are
opened for calls side by side, and kept): two threads in calls on one
connection can crash the process (L{comet.virt._sessions}).

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

from collections.abc import Callable
from typing import Any

import libvirt
from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredSemaphore,
    gatherResults,
    succeed,
)
from twisted.python.threadpool import ThreadPool

from comet.config import ComputeConfig, HostConfig
from comet.virt import _counters, _display, _operations, domainxml
from comet.virt._batches import Batches
from comet.virt._connections import CALLS_PER_HOST, _Host, _HostConnections
from comet.virt._counters import DomainCounters
from comet.virt._cpus import _CpuReads
from comet.virt._eventloop import ensure_event_loop
from comet.virt._migrations import _Migrations
from comet.virt._opening import (
    INITIAL_BACKOFF,
    KEEPALIVE_COUNT,
    KEEPALIVE_INTERVAL,
    MAX_BACKOFF,
)
from comet.virt._sessions import exclusive_uri
from comet.virt._values import (
    DomainInfo,
    GraphicsAddress,
    HostStatus,
    NodeInfo,
    OwnedDomain,
)

__all__ = [
    "CALLS_PER_HOST",
    "INITIAL_BACKOFF",
    "KEEPALIVE_COUNT",
    "KEEPALIVE_INTERVAL",
    "MAX_BACKOFF",
    "Hypervisors",
]


class Hypervisors(_Migrations, _HostConnections, _CpuReads, Service):
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
    @param keepalive: libvirt's keepalive on remote connections: seconds
        between pings, and how many may go unanswered before the connection
        is closed.
    @param exclusive: whether a connection to a URI serves one call at a
        time (then calls side by side get connections of their own, see
        L{comet.virt._sessions}); by default, all but the in-process test
        driver's.
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
        exclusive: Callable[[str], bool] = exclusive_uri,
        keepalive: tuple[int, int] = (KEEPALIVE_INTERVAL, KEEPALIVE_COUNT),
    ):
        ensure_event_loop()
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._timeout = compute.libvirt_timeout
        self._open_connection = open_connection
        self._exclusive = exclusive
        self._keepalive = keepalive
        self._threads = compute.libvirt_threads
        self._pool = self._new_pool()
        self._probe_pool = self._new_probe_pool(len(hosts))
        #: Probes run in rounds: those of one reactor turn share a hand-off.
        self._probes = Batches(reactor, lambda: self._probe_pool)
        #: Probe in flight -> its deadline; one timer for them all.
        self._probe_deadlines: dict[Deferred, float] = {}
        self._probe_timer = None
        self._hosts = {
            h.name: _Host(config=h, slots=DeferredSemaphore(calls_per_host))
            for h in hosts
        }
        self._subscribers: list[Callable[[str, str, str], object]] = []
        self._host_subscribers: list[Callable[[str, str, str], object]] = []
        self._stopping = False
        self._cpu_cache: dict = {}

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
        host becomes C{connected} or C{unreachable}, or is C{removed}
        (L{remove_host}).

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

    def domain_counters(self, host: str) -> Deferred[list[DomainCounters]]:
        """
        CPU, disk and network counters of every running domain on the host,
        read now (for a scrape): one bulk call on QEMU (L{_counters}).
        """
        return self._call(host, f"reading the counters of {host!r}", _counters.domain_counters)

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
        return self._domain_call(host, name, "taking a screenshot of", _display.screenshot)

    def graphics_address(self, host: str, name: str) -> Deferred[GraphicsAddress]:
        """Where the running domain's VNC display listens on its host."""
        return self._domain_call(
            host, name, "finding the display of", _display.graphics_address
        )

    def set_vnc_password(self, host: str, name: str, password: str,
                         valid_to: float | None = None) -> Deferred[None]:
        """
        Change the running domain's VNC password, live only (1 to 8 printable
        ASCII characters, else L{InvalidInput}), valid until C{valid_to}
        (epoch seconds; C{None}: no limit).
        """
        return self._domain_call(
            host, name, "setting the VNC password of", _display.set_vnc_password, password,
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
        device: domainxml.DiskSpec | domainxml.NicSpec | str,
        live: bool | None = None,
        config: bool = True,
    ) -> Deferred[None]:
        """
        Attach a device (a L{DiskSpec}, L{NicSpec} or device XML).  C{live}: to the
        running domain (C{None}: if it runs); C{config}: to its definition too.
        """
        xml = domainxml.device_xml(device)
        return self._domain_call(
            host, name, "attaching a device to", _operations.attach_device, xml, live, config
        )

    def detach_device(
        self,
        host: str,
        name: str,
        device: domainxml.DiskSpec | domainxml.NicSpec | str,
        live: bool | None = None,
        config: bool = True,
    ) -> Deferred[None]:
        """Detach a device; the arguments are those of L{attach_device}."""
        xml = domainxml.device_xml(device)
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



def _subscribe(callbacks: list, callback) -> Callable[[], None]:
    """Add C{callback} to C{callbacks}; a function that takes it out again."""
    callbacks.append(callback)

    def unsubscribe() -> None:
        if callback in callbacks:
            callbacks.remove(callback)

    return unsubscribe
