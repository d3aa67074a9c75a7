"""
What changed, as it happens: the daemon's event log, which C{GET /events}
streams (L{comet.web.events}).

The model emits an L{Event} where a change is made or observed: a record
created, changed or deleted, a task's progress and end, a VM's state as
libvirt reports it (L{VMStateEvents}: changes made outside Comet
included), a compute host's or storage server's reachability.  An event
names its resource by kind and ids (C{("vm", {"cluster": "lab", "name":
"web-1"})}); the web layer makes the C{href}.

Emitting is cheap whether or not anyone listens: one small object appended
to a bounded ring (L{EventLog.size} events, for C{Last-Event-ID} resume) and
one call per subscriber.  Nothing is encoded or looked up here.

Event ids are C{"<boot>-<n>"}: C{boot} tells the events of this run from
those of an earlier one (numbers start again at 1 after a restart), so a
client resuming with the id of another run, or one older than the ring,
is told to list again (L{EventLog.since} answers C{None}).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Mapping

import attrs
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.logger import Logger

log = Logger()

#: Kinds of resource an event is about, and what may happen to each.
KINDS = {
    "cluster": ("created", "changed", "deleted"),
    "vm": ("created", "changed", "deleted", "state"),
    "template": ("created", "changed", "deleted"),
    "volume": ("created", "changed", "deleted"),
    "snapshot": ("created", "deleted", "reverted"),
    "task": ("created", "progress", "finished", "failed"),
    "host": ("state",),
    "storageserver": ("state",),
}

#: Every event type: C{<kind>.<what>}.
TYPES = frozenset(f"{kind}.{what}" for kind, whats in KINDS.items() for what in whats)


@attrs.frozen
class Event:
    """
    One change.

    @ivar id: C{"<boot>-<n>"}, increasing within a run.
    @ivar seq: C{n}.
    @ivar type: C{<kind>.<what>} (L{TYPES}).
    @ivar ids: what names the resource (the parameters of its URI).
    @ivar data: what the event says besides (a VM's C{state}, a task's
        C{status}, C{progress} and C{message}); plain JSON values.
    @ivar time: seconds since the epoch.
    """

    id: str
    seq: int
    type: str
    ids: Mapping[str, Any]
    data: Mapping[str, Any]
    time: int

    @property
    def kind(self) -> str:
        return self.type.partition(".")[0]


class EventLog:
    """
    The bounded log of recent events, and who follows it.

    @param clock: what dates events (the reactor).
    @param size: how many events are kept for resuming.
    """

    def __init__(self, clock, size: int = 1000):
        self._clock = clock
        self.size = size
        self.boot = str(int(clock.seconds()))
        self._seq = 0
        self._ring: deque[Event] = deque(maxlen=size)
        self._subscribers: list[Callable[[Event], object]] = []

    def emit(self, type: str, ids: Mapping[str, Any], **data: Any) -> None:
        """Record that C{type} happened to the resource named by C{ids}, and tell the followers."""
        if type not in TYPES:
            raise ValueError(f"unknown event type {type!r}")
        self._seq += 1
        event = Event(f"{self.boot}-{self._seq}", self._seq, type, ids, data,
                      int(self._clock.seconds()))
        self._ring.append(event)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.failure("event subscriber {callback} failed", callback=callback)

    def subscribe(self, callback: Callable[[Event], object]) -> Callable[[], None]:
        """Call C{callback(event)} for each event from now on; returns the unsubscriber."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    @property
    def followers(self) -> int:
        return len(self._subscribers)

    @property
    def last_id(self) -> str:
        """The id of the last event (C{"<boot>-0"} before the first)."""
        return f"{self.boot}-{self._seq}"

    def since(self, last_id: str) -> list[Event] | None:
        """
        The events after the one whose id is C{last_id}; C{None} when they
        are not all known: the id is of another run, not an id, in the
        future, or older than the ring (events after it were dropped).
        """
        boot, _, number = last_id.partition("-")
        if boot != self.boot or not number.isascii() or not number.isdigit():
            return None
        seq = int(number)
        if seq > self._seq:
            return None
        oldest = self._ring[0].seq if self._ring else self._seq + 1
        if seq < oldest - 1:
            return None
        return [event for event in self._ring if event.seq > seq]


class Silent:
    """An event log that drops everything (a model made without one)."""

    def emit(self, type: str, ids: Mapping[str, Any], **data: Any) -> None:
        pass


def or_silent(events) -> Any:
    return Silent() if events is None else events


class VMStateEvents:
    """
    C{vm.state} events from libvirt's lifecycle events, on the connections
    the daemon already keeps to each host (L{Hypervisors.subscribe}), and
    C{host.state} events from its host reachability: so a VM started with
    C{virsh} shows up as well as one started by Comet.

    @param hypervisors: the L{Hypervisors}.
    @param settled: C{settled(host, domain)} -> a L{Deferred} that fires
        once the state cache has weighed what is in flight about the domain
        (L{comet.virt.CachedStates.settled}); C{None}: events are told at once.
    @param by_uuid: C{async by_uuid(uuid)} -> the VM's record (a
        L{comet.store.vms.VMRecord}), raising when there is none: which VM a
        domain is (its name is C{comet-<uuid>}).
    """

    #: Lifecycle event -> the state it says the VM is in.
    SAYS = {
        "started": "running",
        "resumed": "running",
        "suspended": "paused",
        "pmsuspended": "paused",
        "stopped": "shutoff",
        "shutdown": "shutoff",
        "crashed": "crashed",
    }

    def __init__(self, events: EventLog, hypervisors, by_uuid, prefix: str = "comet-",
                 settled=None):
        self._events = events
        self._by_uuid = by_uuid
        self._settled = settled
        self._prefix = prefix
        #: Lookups run one at a time, so events leave in the order libvirt gave them.
        self._order = DeferredLock()
        self._unsubscribe = [
            hypervisors.subscribe(self._domain_event),
            hypervisors.subscribe_hosts(self._host_event),
        ]

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []

    def _host_event(self, host: str, state: str, reason: str) -> None:
        self._events.emit("host.state", {"name": host}, state=state, reason=reason)

    def _domain_event(self, host: str, domain: str, event: str) -> None:
        state = self.SAYS.get(event)
        if state is None or not domain.startswith(self._prefix):
            return   # defined/undefined: the VM's created/deleted say it; not Comet's domain
        uuid = domain[len(self._prefix):]
        # Told once the state cache has weighed it (L{CachedStates.settled}),
        # so that a client reading the VM on this event is given the new
        # state; events of one domain stay in libvirt's order, as they
        # settle together.
        settled = succeed(None) if self._settled is None else self._settled(host, domain)
        settled.addCallback(lambda _: self._order.run(self._emit, host, uuid, event, state))
        settled.addErrback(lambda f: log.failure("telling {domain}'s {event}", f,
                                                 domain=domain, event=event))

    def _emit(self, host: str, uuid: str, event: str, state: str) -> Deferred:
        return Deferred.fromCoroutine(self._lookup_and_emit(host, uuid, event, state))

    async def _lookup_and_emit(self, host: str, uuid: str, event: str, state: str) -> None:
        try:
            record = await self._by_uuid(uuid)
        except Exception:
            return   # a domain of no VM (a leftover, or one being deleted)
        if record is None:
            return
        self._events.emit("vm.state", {"cluster": record.cluster, "name": record.name},
                          state=state, event=event, host=host)
