"""
The probes of L{comet.virt.CachedStates} (mixed into it): a cached state is
served only once a probe of its host that began after the read was asked for
has answered (see L{comet.virt._statecache}); concurrent reads share a probe,
and a read of many hosts (C{GET /cluster}) proves them all with one round.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from comet.virt._deferreds import as_deferred, chain


class _ProbedReads:
    """Mixed into L{CachedStates}, whose constructor makes C{_hv} and C{_hosts}."""

    def domain_states_of(self, hosts) -> Deferred[dict[str, dict[str, str] | Failure]]:
        """
        L{domain_states} of each of C{hosts}, by host (a L{Failure} where it
        fails).  The hosts whose states are known and not being probed share
        one probe round, without a reader each: C{GET /cluster} over 100 hosts
        ran 100 of them.
        """
        return Deferred.fromCoroutine(self._domain_states_of(list(hosts)))

    async def _domain_states_of(self, hosts: list[str]) -> dict[str, dict[str, str] | Failure]:
        entries = {h: self._hosts.get(h) for h in hosts}
        known = [h for h, e in entries.items() if e is not None and e.states is not None
                 and not e.probing]
        proved = set(known)
        others = [h for h in hosts if h not in proved]
        slow = DeferredList([self.domain_states(h) for h in others], consumeErrors=True)
        answers = await self._probe_round(known, [entries[h] for h in known]) if known else {}
        results: dict[str, dict[str, str] | Failure] = {}
        for host in known:
            entry, failure = entries[host], answers[host]
            if failure is None and entry.states is not None and not entry.rereads:
                results[host] = dict(entry.states)
            elif failure is not None:
                results[host] = failure
            else:  # in doubt or dropped meanwhile: the one-host path
                (ok, value), = await DeferredList([self.domain_states(host)], consumeErrors=True)
                results[host] = value
        for host, (ok, value) in zip(others, await slow):
            results[host] = value
        return results

    # One host -----------------------------------------------------------------------

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
                chain(result, waiter)
            if entry.waiting:
                self._start_probe(host, entry)

        as_deferred(self._hv.ping, host).addBoth(done)

    def _probe_round(self, hosts: list[str], entries: list[_HostStates]) -> Deferred:
        """One probe of each of C{hosts} (none probing now); readers that come meanwhile wait for the next."""
        for entry in entries:
            entry.probing = True

        def done(answers):
            for host, entry in zip(hosts, entries):
                entry.probing = False
                if entry.waiting:
                    self._start_probe(host, entry)
            return answers

        # One probe each, asked in one turn: one hand-off and one timer for them all.
        pings = DeferredList([as_deferred(self._hv.ping, host) for host in hosts],
                             consumeErrors=True)
        return pings.addCallback(
            lambda answers: {h: (None if ok else value) for h, (ok, value) in zip(hosts, answers)}
        ).addCallback(done)
