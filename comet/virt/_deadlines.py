"""
The probes' timeouts, mixed into L{comet.virt.Hypervisors} (through its
connection half): one timer for every probe in flight instead of one each.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred


class _ProbeDeadlines:
    """
    Mixed in; the constructor makes C{_probe_deadlines} (probe -> deadline)
    and C{_probe_timer}, and the connection half gives C{_timed_out}.
    """

    def _with_deadline(self, d: Deferred, host, what: str, used: list):
        """
        C{d} (a probe) within the call timeout, as C{addTimeout} would give
        it, but with one timer for every probe in flight instead of one each:
        C{GET /cluster} over 100 hosts makes 100 probes at once, and a timer
        each (made and cancelled) cost the reactor more than the probes.
        """
        pending = self._probe_deadlines
        pending[d] = self._clock.seconds() + self._timeout
        if self._probe_timer is None:
            self._probe_timer = self._clock.callLater(self._timeout, self._probes_due)

        def settled(result):
            if pending.pop(d, None) is None:  # given up on at its deadline
                return self._timed_out(host, what, used, result, self._timeout)
            if not pending and self._probe_timer is not None:
                self._probe_timer.cancel()
                self._probe_timer = None
            return result

        return d.addBoth(settled)

    def _probes_due(self) -> None:
        """The probe timer: the probes past their deadline are given up on."""
        self._probe_timer = None
        now = self._clock.seconds()
        pending = self._probe_deadlines
        for d in [d for d, deadline in pending.items() if deadline <= now]:
            del pending[d]
            d.cancel()
        if pending:
            self._probe_timer = self._clock.callLater(
                max(0.0, min(pending.values()) - now), self._probes_due)
