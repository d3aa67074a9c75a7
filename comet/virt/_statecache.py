"""
L{CachedStates}: the domain states of every host, kept in memory from
libvirt's lifecycle events, so that reading them costs no listing.

Reading a VM, a list of VMs or C{GET /cluster} needs the state of domains;
asking libvirt each time costs a thread hand-off per request and, for a list,
a bulk listing of every domain of every host (O(N) per request).  Here each
host's states are:

  - I{filled} by one bulk C{domain_states} call when first needed and after
    the host (re)connects (eagerly, when L{Hypervisors} reports it connected);
  - I{kept current} by the lifecycle events L{Hypervisors.subscribe}
    delivers: C{started}/C{resumed} -> running, C{suspended} -> paused,
    C{stopped} -> shutoff, C{defined} -> shutoff if the domain was not
    known; any other event (C{undefined}, C{shutdown}, C{crashed},
    C{pmsuspended}, C{other}) has its domain read again, live;
  - I{set after Comet's own actions} (a start that succeeded is running at
    once, without waiting for its event), and read again live after one that
    failed;
  - I{dropped} (read live again) when the host disconnects or reconnects:
    events are lost while a connection is down, and the event callback is
    registered per connection.

A cached state is never served without proof that the host still answers: each
read waits for a I{probe} (L{Hypervisors.ping}, one cheap call in a pool of
its own, not behind the host's other calls) that began I{after} the read was
asked for.  Concurrent reads share one probe, so under load a probe serves
many requests.  A host that stops answering therefore still turns its VMs
C{unknown} (the probe times out after C{libvirt_timeout} and marks the host
unreachable), as a live read did.

What can still be seen: a change made behind Comet's back (with C{virsh}) is
shown once its event has arrived, normally within milliseconds (the event
and a probe's answer travel on the same connection).

Everything here runs in the reactor thread.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.python.failure import Failure

from comet.errors import CometError, NotFound
from comet.virt import _operations

#: Lifecycle event -> the state it leaves its domain in, when it says so alone.
EVENT_STATES = {
    "started": "running",
    "resumed": "running",
    "suspended": "paused",
    "stopped": "shutoff",
}

#: A successful action of Comet's -> the state it leaves its domain in.
ACTION_STATES = {
    "start": "running",
    "resume": "running",
    "suspend": "paused",
    "destroy": "shutoff",
}


@attrs.define(eq=False)
class _HostStates:
    """One host's cached states and probes."""

    #: Domain name -> state; C{None}: not known, the next read fills it.
    states: dict[str, str] | None = None
    #: Bumped whenever the cache is dropped: a fill begun before is stale.
    epoch: int = 0
    #: A bulk fill in progress: the events that arrived since it began.
    pending: list[tuple[str, str]] | None = None
    #: The reads waiting for that fill.
    filling: list[Deferred] | None = None
    #: Domains being read again live, and the reads.
    rereads: dict[str, Deferred] = attrs.Factory(dict)
    #: Whether a probe is in flight; the reads waiting for the one after it.
    probing: bool = False
    waiting: list[Deferred] = attrs.Factory(list)


class CachedStates:
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
        self._hosts.clear()

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
            return dict(await self._fill(host, entry))
        await self._probe(host, entry)
        while entry.rereads:
            await next(iter(entry.rereads.values()))
        if entry.states is None:
            # Dropped while waiting (the host reconnected): read it live.
            return dict(await self._fill(host, entry))
        return dict(entry.states)

    async def _domain_state(self, host: str, name: str) -> str:
        entry = self._entry(host)
        if entry.states is None:
            states = await self._fill(host, entry)
        else:
            await self._probe(host, entry)
            if name in entry.rereads:
                await entry.rereads[name]
            states = entry.states if entry.states is not None else await self._fill(host, entry)
        try:
            return states[name]
        except KeyError:
            raise NotFound(f"domain {name!r} is not defined on compute host {host!r}") from None

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
                _chain(result, waiter)

        Deferred.fromCoroutine(self._filled(host, entry)).addBoth(done)
        return d

    async def _filled(self, host: str, entry: _HostStates) -> dict[str, str]:
        epoch = entry.epoch
        pending: list[tuple[str, str]] = []
        entry.pending = pending
        try:
            states = await self._hv.domain_states(host)
        finally:
            if entry.pending is pending:
                entry.pending = None
        if entry.epoch == epoch:
            entry.states = dict(states)
            for domain, event in pending:
                self._apply(host, entry, domain, event)
        return states

    def _drop(self, entry: _HostStates) -> None:
        entry.states = None
        entry.epoch += 1

    def _host_changed(self, host: str, state: str, reason: str) -> None:
        """A host (re)connected or was lost: its events may have been missed."""
        entry = self._hosts.setdefault(host, _HostStates())
        self._drop(entry)
        # A fill begun before this answers its own readers but fills nothing.
        entry.filling = entry.pending = None
        if state == "connected":
            self._fill(host, entry).addErrback(lambda _: None)

    # Events ----------------------------------------------------------------------

    def _event(self, host: str, domain: str, event: str) -> None:
        entry = self._hosts.get(host)
        if entry is None:
            return
        if entry.pending is not None:
            entry.pending.append((domain, event))
        if entry.states is not None:
            self._apply(host, entry, domain, event)

    def _apply(self, host: str, entry: _HostStates, domain: str, event: str) -> None:
        states = entry.states
        if states is None:
            return
        if event in EVENT_STATES:
            states[domain] = EVENT_STATES[event]
        elif event == "defined" and domain in states:
            pass  # redefined: its state did not change
        elif event == "defined":
            states[domain] = "shutoff"
        else:
            self._reread(host, entry, domain)

    def _reread(self, host: str, entry: _HostStates, domain: str) -> Deferred:
        """Read one domain's state live into the cache (after an unclear event)."""
        epoch = entry.epoch
        live = Deferred.fromCoroutine(self._read_one(host, domain))

        def done(result):
            if entry.rereads.get(domain) is d:
                del entry.rereads[domain]
            if entry.epoch == epoch and entry.states is not None:
                if isinstance(result, str):
                    entry.states[domain] = result
                elif result is _GONE:
                    entry.states.pop(domain, None)
                else:
                    # The host did not answer: nothing of it is known now.
                    self._drop(entry)

        d = live.addBoth(lambda r: (done(r), None)[1])
        entry.rereads[domain] = d
        return d

    async def _read_one(self, host: str, domain: str):
        try:
            return await self._hv.domain_state(host, domain)
        except NotFound:
            return _GONE
        except CometError:
            return None

    # Probes -----------------------------------------------------------------------

    def _probe(self, host: str, entry: _HostStates) -> Deferred[None]:
        """Fires once a probe that began after this call has answered."""
        d: Deferred = Deferred()
        entry.waiting.append(d)
        if not entry.probing:
            self._start_probe(host, entry)
        return d

    def _start_probe(self, host: str, entry: _HostStates) -> None:
        waiters, entry.waiting = entry.waiting, []
        entry.probing = True

        def done(result):
            entry.probing = False
            for waiter in waiters:
                _chain(result, waiter)
            if entry.waiting:
                self._start_probe(host, entry)

        _deferred(self._hv.ping, host).addBoth(done)

    # Comet's own actions -----------------------------------------------------------

    def define(self, host: str, domain) -> Deferred[str]:
        if isinstance(domain, str):
            name, _ = _operations._name_and_uuid(domain)
        else:
            name = domain.name

        def defined(result):
            entry = self._hosts.get(host)
            if entry is not None and entry.states is not None:
                entry.states.setdefault(name, "shutoff")
            return result

        return _deferred(self._hv.define, host, domain).addCallbacks(
            defined, self._failed, errbackArgs=(host, name)
        )

    def start(self, host: str, name: str) -> Deferred[None]:
        return self._act("start", host, name)

    def destroy(self, host: str, name: str) -> Deferred[None]:
        return self._act("destroy", host, name)

    def suspend(self, host: str, name: str) -> Deferred[None]:
        return self._act("suspend", host, name)

    def resume(self, host: str, name: str) -> Deferred[None]:
        return self._act("resume", host, name)

    def shutdown(self, host: str, name: str) -> Deferred[None]:
        return self._act("shutdown", host, name)

    def reset(self, host: str, name: str) -> Deferred[None]:
        return self._act("reset", host, name)

    def undefine(self, host: str, name: str) -> Deferred[None]:
        def undefined(result):
            entry = self._hosts.get(host)
            if entry is not None and entry.states is not None:
                # Comet undefines only shut-off domains: it is gone.
                entry.states.pop(name, None)
            return result

        return _deferred(self._hv.undefine, host, name).addCallbacks(
            undefined, self._failed, errbackArgs=(host, name)
        )

    def _act(self, action: str, host: str, name: str) -> Deferred[None]:
        def done(result):
            entry = self._hosts.get(host)
            if action in ACTION_STATES and entry is not None and entry.states is not None:
                entry.states[name] = ACTION_STATES[action]
            return result

        return _deferred(getattr(self._hv, action), host, name).addCallbacks(
            done, self._failed, errbackArgs=(host, name)
        )

    def _failed(self, failure, host: str, name: str):
        """An action failed: what its domain is now is not known; read it again."""
        entry = self._hosts.get(host)
        if entry is None or entry.states is None:
            return failure
        return self._reread(host, entry, name).addBoth(lambda _: failure)


_GONE = object()


def _deferred(method, *args) -> Deferred:
    """C{method(*args)} as a L{Deferred}, whether it answers one or is a coroutine (as a test's stand-in may be)."""
    try:
        return ensureDeferred(method(*args))
    except Exception:
        return fail()


def _chain(result, d: Deferred) -> None:
    """Pass C{result} (a value or a failure) on to C{d}; the source ends with C{None}."""
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)
