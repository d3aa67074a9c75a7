"""
Whether the daemon can serve, and if not what is wrong: what C{GET /health}
answers.

Five checks, in two classes:

  - B{Needed to serve} (a failure is C{failing}: the API answers 503, and a
    load balancer should send no traffic here): the database takes a write
    (a write that changes nothing, through the database thread, bounded by
    L{DB_TIMEOUT}); this daemon still holds its lease on it (its owner row
    is there: another Comet did not take it for dead); the reconciler is
    not stuck (a pass ended within L{stale_after} its interval).
  - B{Partial} (a failure is C{degraded}, still 200: everything else works):
    a compute host or a storage server does not answer.  Their VMs and
    volumes cannot be acted on, the rest of the API can.  A reconciler pass
    that failed (it runs again at its next interval) is partial too.

Only what the daemon already knows is read, except the database write (one
statement; concurrent checks share one): a check costs no libvirt call and
no ssh command, so a load balancer may ask every second.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.python.failure import Failure

OK = "ok"
DEGRADED = "degraded"
FAILING = "failing"

#: Seconds the database write may take before the database counts as stuck.
DB_TIMEOUT = 2.0


def stale_after(interval: float) -> float:
    """Seconds without an ended pass after which the reconciler counts as stuck."""
    return max(3 * interval, interval + 120)


@attrs.frozen
class Check:
    """One check: its state and, for an authenticated caller, what it saw."""

    name: str
    #: L{OK}, L{DEGRADED} or L{FAILING}.
    state: str
    #: One sentence (C{""} when all is well); may name hosts and servers.
    reason: str = ""
    #: What was seen, for an authenticated caller (JSON values).
    detail: Any = None


@attrs.frozen
class Report:
    checks: tuple[Check, ...]

    @property
    def status(self) -> str:
        states = {c.state for c in self.checks}
        return FAILING if FAILING in states else DEGRADED if DEGRADED in states else OK

    @property
    def code(self) -> int:
        """200 when the daemon can serve (degraded included), 503 when it cannot."""
        return 503 if self.status == FAILING else 200


class Health:
    """
    @param locks: L{comet.model.locks.Locks} (the lease, and the database write).
    @param reconciler: L{comet.model.reconcile.Reconciler} or C{None}.
    @param hypervisors: what says each compute host's status without asking it
        (L{comet.virt.Hypervisors.statuses}).
    @param serverwatch: L{comet.model.serverwatch.ServerWatch} or C{None}.
    @param clock: C{seconds()} and C{callLater()}.
    """

    def __init__(self, locks, reconciler, hypervisors, serverwatch, clock,
                 db_timeout: float = DB_TIMEOUT):
        self._locks = locks
        self._reconciler = reconciler
        self._hypervisors = hypervisors
        self._serverwatch = serverwatch
        self._clock = clock
        self._db_timeout = db_timeout
        self._since = clock.seconds()
        self._waiting: list[Deferred] = []

    async def check(self) -> Report:
        database, lease = await self._database()
        return Report((database, lease, self._reconcile(), self._hosts(), self._storage()))

    # Needed to serve -------------------------------------------------------------

    def _write(self) -> Deferred:
        """
        The lease row's write (L{comet.model.locks.Locks.check_lease}), one
        shared by every check made while it is in flight (a database that
        hangs gets one statement queued, not one per check), each caller
        waiting at most C{db_timeout}.
        """
        answer: Deferred = Deferred()
        self._waiting.append(answer)
        if len(self._waiting) == 1:
            ensureDeferred(self._locks.check_lease()).addBoth(self._written)
        answer.addTimeout(self._db_timeout, self._clock)
        return answer

    def _written(self, result) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if d.called:
                continue   # timed out already
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    async def _database(self) -> tuple[Check, Check]:
        if not self._locks.leased:
            return (Check("database", FAILING, "not checked: this daemon holds no lease"
                          " (it is starting or stopping)"),
                    Check("lease", FAILING, "this daemon does not hold the database's lease"))
        began = self._clock.seconds()
        try:
            there = await self._write()
        except DeferredTimeout:
            reason = f"the database took no write within {self._db_timeout:g} s"
        except Exception as e:
            reason = f"the database takes no write: {str(e) or type(e).__name__}"
        else:
            reason = None
        if reason is not None:
            return (Check("database", FAILING, reason),
                    Check("lease", FAILING, "unknown: the database does not answer"))
        database = Check("database", OK, detail={"seconds": round(self._clock.seconds() - began, 6)})
        if not there:
            return database, Check(
                "lease", FAILING, "this daemon's lease is gone from the database"
                " (another Comet took it for dead): it no longer owns its locks")
        return database, Check("lease", OK)

    def _reconcile(self) -> Check:
        reconciler = self._reconciler
        if reconciler is None:
            return Check("reconcile", OK, detail={"interval": 0})
        now = self._clock.seconds()
        last = reconciler.last_pass
        detail = {
            "interval": reconciler.interval,
            "last_pass": None if last is None else {
                "began": last.began, "ended": last.ended, "repairs": last.repairs,
                "error": last.error},
            "running_since": reconciler.running_since,
        }
        if reconciler.interval > 0:
            limit = stale_after(reconciler.interval)
            since = last.ended if last is not None else self._since
            if now - since > limit:
                return Check("reconcile", FAILING,
                             f"no reconciler pass has ended for {now - since:.0f} s"
                             f" (it runs every {reconciler.interval:g} s)", detail)
        if last is not None and last.error is not None:
            return Check("reconcile", DEGRADED,
                         f"the last reconciler pass failed: {last.error}", detail)
        return Check("reconcile", OK, detail=detail)

    # Partial ---------------------------------------------------------------------

    def _hosts(self) -> Check:
        statuses = self._hypervisors.statuses() if self._hypervisors is not None else ()
        detail = [{"name": s.name, "state": s.state, "reason": s.reason} for s in statuses]
        down = [s.name for s in statuses if s.state != "connected"]
        if down:
            return Check("hosts", DEGRADED,
                         f"compute host(s) {', '.join(down)} do not answer: their VMs cannot"
                         " be acted on; the rest of the API works", detail)
        return Check("hosts", OK, detail=detail)

    def _storage(self) -> Check:
        states = dict(self._serverwatch.states) if self._serverwatch is not None else {}
        detail = [{"name": name, "state": state} for name, state in sorted(states.items())]
        down = [name for name, state in sorted(states.items()) if state != "reachable"]
        if down:
            return Check("storage", DEGRADED,
                         f"storage server(s) {', '.join(down)} do not answer: their volumes"
                         " cannot be acted on; the rest of the API works", detail)
        return Check("storage", OK, detail=detail)
