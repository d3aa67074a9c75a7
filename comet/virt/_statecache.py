"""
L{CachedStates}: the domain states of every host, kept in memory from
libvirt's lifecycle events, so that reading them costs no listing.

Reading a VM, a list of VMs or C{GET /cluster} needs the state of domains;
asking libvirt each time costs a thread hand-off per request and, for a list,
a bulk listing of every domain of every host (O(N) per request).  Here each
host's states are:

  - I{filled} by one bulk C{domain_states} call when first needed and after
    the host (re)connects (eagerly, when L{Hypervisors} reports it connected);
  - I{set by Comet's own actions}: each action answers with the domain's
    state read right after it, in the same libvirt call, so the answer to an
    action shows what it did (a client reads its own writes) without waiting
    for the action's event; one that failed has its domain read again;
  - I{kept current} by the lifecycle events L{Hypervisors.subscribe}
    delivers, which say what changed but not when: libvirt's event thread
    may hand one over after a read that it is older than (an event of
    Comet's own action arriving after the action's answer, or one of the
    action before it).  So an event never overwrites a state: one that
    agrees with the cached state (C{started} for a running domain, the
    usual echo of Comet's own action) changes nothing, and any other has its
    domain read again, live;
  - I{dropped} (read live again) when the host disconnects or reconnects:
    events are lost while a connection is down, and the event callback is
    registered per connection.

Every live read (a fill, an action, a read again) is ordered against what was
learned while it was in flight: each event and each read's answer is noted
against a per-host counter, and a read that ends is applied only if all that
was learned of its domain since it began agrees with it.  Otherwise the order
is unknown (two reads in flight at once, or an event during a read) and the
domain is read again by a read that begins after all of it.  Readers of a
domain wait for such a read, so the state they are given is never older than
anything Comet had learned when they asked.

A cached state is never served without proof that the host still answers: each
read waits for a I{probe} (L{Hypervisors.ping}, one cheap call in a pool of
its own, not behind the host's other calls) that began I{after} the read was
asked for.  Concurrent reads share one probe, so under load a probe serves
many requests.  A host that stops answering therefore still turns its VMs
C{unknown} (the probe times out after C{libvirt_timeout} and marks the host
unreachable), as a live read did.

What can still be seen: a change made behind Comet's back (with C{virsh}) is
shown once its event has arrived and its domain has been read again, normally
within milliseconds.

Everything here runs in the reactor thread.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from comet.errors import CometError, NotFound
from comet.virt import _operations
from comet.virt._deferreds import after, as_deferred, chain
from comet.virt._stateprobes import _ProbedReads
from comet.virt._values import SHUTOFF

_log = Logger()

#: What the cache has learned of a domain, besides a state: that it is not
#: defined, that it is defined (in a state the event does not say), or only
#: that something happened to it.
_GONE = "(not defined)"
_DEFINED = "(defined)"
_UNCLEAR = "(changed)"

#: Lifecycle event -> what it says of its domain.
EVENT_SAYS = {
    "started": "running",
    "resumed": "running",
    "suspended": "paused",
    "stopped": "shutoff",
    "defined": _DEFINED,
    "undefined": _GONE,
}


def _agrees(said: str, state: str) -> bool:
    """Whether what an event or read said of a domain fits its state C{state} (or L{_GONE})."""
    if said == _DEFINED:
        return state != _GONE
    return said == state


@attrs.define(eq=False)
class _Read:
    """A live read in flight: of one domain, or (C{domain} C{None}) of every domain."""

    domain: str | None
    #: The host's L{_HostStates.clock} when it began.
    began: int
    #: The host's L{_HostStates.epoch} when it began.
    epoch: int


@attrs.define(eq=False)
class _HostStates:
    """One host's cached states, live reads and probes."""

    #: Domain name -> state; C{None}: not known, the next read fills it.
    states: dict[str, str] | None = None
    #: Bumped whenever the cache is dropped: a read begun before is stale.
    epoch: int = 0
    #: Counts what was learned (events, reads' answers), to order them.
    clock: int = 0
    #: The live reads in flight.
    reads: list[_Read] = attrs.Factory(list)
    #: Domain -> C{(clock, what was said)} learned while a read was in flight
    #: (kept only as long as a read that began before it is).
    learned: dict[str, list[tuple[int, str]]] = attrs.Factory(dict)
    #: The reads waiting for a fill in progress.
    filling: list[Deferred] | None = None
    #: Domains being read again live (their state is in doubt), and the reads.
    rereads: dict[str, Deferred] = attrs.Factory(dict)
    #: Who waits for a domain's state to settle (L{CachedStates.settled}):
    #: woken, to look again, whenever a read ends or the cache is dropped.
    settling: list[Deferred] = attrs.Factory(list)
    #: Whether a probe is in flight; the reads waiting for the one after it.
    probing: bool = False
    waiting: list[Deferred] = attrs.Factory(list)


class CachedStates(_ProbedReads):
    """
    A L{Hypervisors} whose C{domain_state} and C{domain_states} answer from
    memory (see the module docstring); every other attribute is the
    L{Hypervisors}' own.

    @param hypervisors: the L{Hypervisors} (started or not).
    """

    def __init__(self, hypervisors):
        self._hv = hypervisors
        self._hosts: dict[str, _HostStates] = {}
        self._unsubscribe = [
            hypervisors.subscribe(self._event),
            hypervisors.subscribe_hosts(self._host_changed),
        ]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hv, name)

    def close(self) -> None:
        """Stop following events (the cache is no longer used)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        hosts = list(self._hosts.values())
        self._hosts.clear()
        for entry in hosts:
            _wake(entry)

    def _entry(self, host: str) -> _HostStates:
        entry = self._hosts.get(host)
        if entry is None:
            self._hv.status(host)  # NotFound for an unknown host
            entry = self._hosts[host] = _HostStates()
        return entry

    # Reads -------------------------------------------------------------------

    def domain_states(self, host: str) -> Deferred[dict[str, str]]:
        """The state of every domain on the host, by name (a copy)."""
        return Deferred.fromCoroutine(self._domain_states(host))

    def domain_state(self, host: str, name: str) -> Deferred[str]:
        """C{running}, C{paused}, C{shutoff} or C{other}; L{NotFound} if not defined."""
        return Deferred.fromCoroutine(self._domain_state(host, name))

    async def _domain_states(self, host: str) -> dict[str, str]:
        entry = self._entry(host)
        if entry.states is None:
            states = await self._fill(host, entry)
        else:
            await self._probe(host, entry)
            states = None
        while entry.rereads:
            await after(next(iter(entry.rereads.values())))
        if entry.states is not None:
            return dict(entry.states)
        # Dropped while waiting (the host reconnected): read it live.
        return dict(states if states is not None else await self._fill(host, entry))

    async def _domain_state(self, host: str, name: str) -> str:
        entry = self._entry(host)
        if entry.states is None:
            states = await self._fill(host, entry)
        else:
            await self._probe(host, entry)
            states = None
        while name in entry.rereads:
            await after(entry.rereads[name])
        if entry.states is not None:
            states = entry.states
        elif states is None:
            states = await self._fill(host, entry)
        try:
            return states[name]
        except KeyError:
            raise NotFound(f"domain {name!r} is not defined on compute host {host!r}") from None

    def settled(self, host: str, domain: str) -> Deferred[None]:
        """
        Fires once nothing in flight can change what the cache says of
        C{domain}: an event that comes during Comet's own action on it (QEMU's
        C{resumed} during a start) is weighed only when the action answers.
        """
        return Deferred.fromCoroutine(self._settled(host, domain))

    async def _settled(self, host: str, domain: str) -> None:
        entry = self._hosts.get(host)
        while entry is not None and self._hosts.get(host) is entry:
            if domain in entry.rereads:
                await after(entry.rereads[domain])
            elif self._busy(entry, domain):
                woken: Deferred = Deferred()
                entry.settling.append(woken)
                await woken
            else:
                return

    # What was learned, in order -------------------------------------------------

    def _begin(self, entry: _HostStates, domain: str | None) -> _Read:
        read = _Read(domain=domain, began=entry.clock, epoch=entry.epoch)
        entry.reads.append(read)
        return read

    def _learn(self, entry: _HostStates, domain: str, said: str) -> None:
        """Note what was said of C{domain}, for the reads in flight to compare with."""
        entry.clock += 1
        if entry.reads:
            entry.learned.setdefault(domain, []).append((entry.clock, said))

    def _end(self, entry: _HostStates, read: _Read) -> list[str]:
        """C{read} (of one domain) is over: what was learned of its domain while it was in flight."""
        since = [said for clock, said in entry.learned.get(read.domain, ()) if clock > read.began]
        entry.reads.remove(read)
        self._forget(entry)
        _wake(entry)
        return since

    def _forget(self, entry: _HostStates) -> None:
        """Keep only what a read still in flight has to compare with."""
        if not entry.reads:
            entry.learned.clear()
            return
        oldest = min(read.began for read in entry.reads)
        for domain in list(entry.learned):
            kept = [item for item in entry.learned[domain] if item[0] > oldest]
            if kept:
                entry.learned[domain] = kept
            else:
                del entry.learned[domain]

    def _busy(self, entry: _HostStates, domain: str) -> bool:
        """
        Whether a live read of C{domain} (or of every domain) is in flight
        that will weigh what is learned now when it ends (one begun before
        the cache was dropped fills nothing: it does not count).
        """
        return any(
            read.epoch == entry.epoch and read.domain in (None, domain) for read in entry.reads
        )

    def _read_ended(self, host: str, entry: _HostStates, read: _Read, state: str) -> None:
        """
        A live read of one domain answered C{state} (or L{_GONE}): the cached
        state if nothing learned while it was in flight says otherwise; else
        the domain is read again, by a read that begins after all of it.
        """
        since = self._end(entry, read)
        self._learn(entry, read.domain, state)
        if read.epoch != entry.epoch or entry.states is None:
            return  # dropped meanwhile: the next fill reads it
        if all(_agrees(said, state) for said in since):
            if state == _GONE:
                entry.states.pop(read.domain, None)
            else:
                entry.states[read.domain] = state
        else:
            self._reread(host, entry, read.domain)

    # Filling -------------------------------------------------------------------

    def _fill(self, host: str, entry: _HostStates) -> Deferred[dict[str, str]]:
        """One bulk read of the host's states, shared by whoever asks meanwhile."""
        d: Deferred = Deferred()
        if entry.filling is not None:
            entry.filling.append(d)
            return d
        waiters: list[Deferred] = [d]
        entry.filling = waiters

        def done(result):
            if entry.filling is waiters:
                entry.filling = None
            for waiter in waiters:
                chain(result, waiter)

        Deferred.fromCoroutine(self._filled(host, entry)).addBoth(done)
        return d

    async def _filled(self, host: str, entry: _HostStates) -> dict[str, str]:
        read = self._begin(entry, None)
        try:
            states = await self._hv.domain_states(host)
        except BaseException:
            self._end(entry, read)
            raise
        # What was learned of each domain while the listing was in flight.
        since = {
            domain: [said for clock, said in learned if clock > read.began]
            for domain, learned in entry.learned.items()
        }
        entry.reads.remove(read)
        self._forget(entry)
        _wake(entry)
        for domain in since:
            if self._busy(entry, domain):
                self._learn(entry, domain, states.get(domain, _GONE))
        if entry.epoch == read.epoch:
            entry.states = dict(states)
            for domain, said in since.items():
                if not all(_agrees(s, states.get(domain, _GONE)) for s in said):
                    self._reread(host, entry, domain)
        return states

    def _drop(self, entry: _HostStates) -> None:
        entry.states = None
        entry.epoch += 1
        _wake(entry)

    def _host_changed(self, host: str, state: str, reason: str) -> None:
        """A host (re)connected or was lost: its events may have been missed."""
        entry = self._hosts.setdefault(host, _HostStates())
        self._drop(entry)
        # A fill begun before this answers its own readers but fills nothing.
        entry.filling = None
        if state == "connected":
            self._fill(host, entry).addErrback(lambda _: None)

    # Events ----------------------------------------------------------------------

    def _event(self, host: str, domain: str, event: str) -> None:
        """
        An event says what happened to C{domain}, but not when: it may be
        older than the cached state (see the module docstring).  A read in
        flight compares with it when it ends; otherwise one that disagrees
        with the cached state has the domain read again.
        """
        entry = self._hosts.get(host)
        if entry is None:
            return
        said = EVENT_SAYS.get(event, _UNCLEAR)
        self._learn(entry, domain, said)
        if entry.states is None or self._busy(entry, domain):
            return
        if not _agrees(said, entry.states.get(domain, _GONE)):
            self._reread(host, entry, domain)

    def _reread(self, host: str, entry: _HostStates, domain: str) -> Deferred:
        """Read one domain's state live into the cache; readers of it wait for it."""
        read = self._begin(entry, domain)
        waiting = Deferred()
        entry.rereads[domain] = waiting

        def done(result):
            if entry.rereads.get(domain) is waiting:
                del entry.rereads[domain]
            if isinstance(result, Failure):
                _log.failure("reading domain {domain} of {host} again", result,
                             domain=domain, host=host)
            if isinstance(result, str):
                self._read_ended(host, entry, read, result)
            else:
                self._end(entry, read)
                if read.epoch == entry.epoch and entry.states is not None:
                    # The host did not answer: nothing of it is known now.
                    self._drop(entry)
            waiting.callback(None)

        Deferred.fromCoroutine(self._read_one(host, domain)).addBoth(done)
        return waiting

    async def _read_one(self, host: str, domain: str) -> str | None:
        try:
            return await self._hv.domain_state(host, domain)
        except NotFound:
            return _GONE
        except CometError:
            return None

    # Comet's own actions -----------------------------------------------------------

    def define(self, host: str, domain) -> Deferred[str]:
        if isinstance(domain, str):
            name, _ = _operations._name_and_uuid(domain)
        else:
            name = domain.name

        def defined(entry: _HostStates):
            # A new definition is shut off; a redefinition keeps its state.
            known = entry.states.get(name) if entry.states is not None else None
            return known or SHUTOFF

        return self._own(host, name, lambda: self._hv.define(host, domain), defined)

    def undefine(self, host: str, name: str) -> Deferred[None]:
        # Comet undefines only shut-off domains: it is gone.
        return self._own(host, name, lambda: self._hv.undefine(host, name), lambda entry: _GONE)

    def start(self, host: str, name: str) -> Deferred[None]:
        return self._act(self._hv.start, host, name)

    def destroy(self, host: str, name: str) -> Deferred[None]:
        return self._act(self._hv.destroy, host, name)

    def suspend(self, host: str, name: str) -> Deferred[None]:
        return self._act(self._hv.suspend, host, name)

    def resume(self, host: str, name: str) -> Deferred[None]:
        return self._act(self._hv.resume, host, name)

    def shutdown(self, host: str, name: str) -> Deferred[None]:
        return self._act(self._hv.shutdown, host, name)

    def reset(self, host: str, name: str) -> Deferred[None]:
        return self._act(self._hv.reset, host, name)

    def migrate(self, source: str, dest: str, name: str, *args) -> Deferred[str]:
        """L{Hypervisors.migrate}: Comet's own action on both hosts (gone from C{source})."""
        def moving():
            return self._own(source, name, lambda: self._hv.migrate(source, dest, name, *args),
                             lambda entry: _GONE)
        return self._own(dest, name, moving, None)

    def _act(self, action, host: str, name: str) -> Deferred[None]:
        """An action that answers with the state it left the domain in."""
        return self._own(host, name, lambda: action(host, name), None).addCallback(lambda _: None)

    def _own(self, host: str, name: str, operation, state_after) -> Deferred:
        """
        Run Comet's own C{operation()} on C{name} as a live read of it:
        once it succeeded, its domain's state is C{state_after(entry)}, or
        (C{None}) what the operation answered; if it answered no state, or
        failed, the domain is read again.  The answer comes once the cache
        holds that state or is reading the domain again (so that its readers
        wait for it).
        """
        entry = self._hosts.get(host)
        read = self._begin(entry, name) if entry is not None else None

        def done(result):
            if read is None:
                return result
            if isinstance(result, Failure):
                self._end(entry, read)
                if entry.states is None:
                    return result
                # What the domain is now is not known: read it again.
                return after(self._reread(host, entry, name)).addCallback(lambda _: result)
            state = state_after(entry) if state_after is not None else result
            if isinstance(state, str):
                self._read_ended(host, entry, read, state)
            else:
                self._end(entry, read)
                if entry.states is not None:
                    self._reread(host, entry, name)
            return result

        return as_deferred(operation).addBoth(done)


def _wake(entry: _HostStates) -> None:
    """Let those waiting for a domain of C{entry} to settle look again (a read ended)."""
    waiters, entry.settling = entry.settling, []
    for waiter in waiters:
        waiter.callback(None)
