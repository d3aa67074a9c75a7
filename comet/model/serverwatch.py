"""
The storage servers' reachability, watched: every C{[storage]
watch_interval} seconds each server is asked for its boot id
(L{comet.remote.machine}), one short command.

A server that answers again after it did not, or that answers from a new
boot, has lost its tgt targets if it rebooted (tgt keeps them in memory
only), and every running VM whose disk it serves waits, its I/O stalled,
until its target is back.  The watch then asks for those exports to be made
again at once (L{comet.model.leftovers.Leftovers.restore_exports}) rather
than at the reconciler's next pass, and asks again at each later check
until none is missing (a server that answers ssh before its pool is
imported, or its zvols' devices exist, cannot export them yet).  The boot
id catches a reboot too quick to be seen as a time without answers.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Mapping

from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from comet.errors import CometError, Unavailable
from comet.model.events import or_silent
from comet.remote.machine import boot_id

log = Logger()

#: Seconds a probe may take before its server counts as not answering.
PROBE_TIMEOUT = 5.0

REACHABLE = "reachable"
UNREACHABLE = "unreachable"

#: C{restore(server)}: the repairs made and how many exports are still missing.
Restore = Callable[[str], Awaitable[tuple[list[str], int]]]


class ServerWatch:
    """
    @param runners: storage server address -> L{comet.remote.IRunner}.
    @param clock: C{seconds()} and C{callLater()}.
    @param restore: makes a server's lost exports again (L{Restore}).
    @param events: the L{comet.model.events.EventLog} told when a server's
        reachability changes (C{storageserver.state}).

    @ivar states: server -> L{REACHABLE} or L{UNREACHABLE}, as last seen
        (absent before its first check).
    @ivar boots: server -> the boot id it last answered.
    """

    def __init__(self, runners: Mapping[str, object], clock, restore: Restore,
                 timeout: float = PROBE_TIMEOUT, events=None):
        self._runners = dict(runners)
        self._events = or_silent(events)
        self._clock = clock
        self._restore = restore
        self._timeout = timeout
        self.states: dict[str, str] = {}
        self.boots: dict[str, str] = {}
        #: Servers whose exports are to be made again (until none is missing).
        self.due: set[str] = set()
        self._checking = False
        self._loop: LoopingCall | None = None
        #: What L{start} was given: L{add} starts the checks it implies.
        self._interval = 0.0

    def add(self, server: str, runner) -> None:
        """Watch storage server C{server} too (a configuration reload)."""
        self._runners[server] = runner
        if self._loop is None and self._interval > 0:
            self.start(self._interval)

    def remove(self, server: str) -> None:
        """Stop watching storage server C{server} (a configuration reload)."""
        self._runners.pop(server, None)
        self.due.discard(server)
        self.states.pop(server, None)
        self.boots.pop(server, None)

    def start(self, interval: float) -> None:
        """Check every C{interval} seconds from now on (0: never)."""
        self._interval = interval
        if interval > 0 and self._runners:
            self._loop = LoopingCall(self._check_logged)
            self._loop.clock = self._clock
            self._loop.start(interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _check_logged(self):
        d = ensureDeferred(self.check())
        d.addErrback(lambda f: log.failure("watching the storage servers failed", f))
        return d

    async def check(self) -> None:
        """Probe every server at once, then restore the exports of those that came back."""
        if self._checking:
            return
        self._checking = True
        try:
            await DeferredList([ensureDeferred(self._probe(s)) for s in self._runners],
                               consumeErrors=True)
            for server in sorted(self.due):
                await self._restore_on(server)
        finally:
            self._checking = False

    async def _probe(self, server: str) -> None:
        before, boot = self.states.get(server), self.boots.get(server)
        try:
            now_boot = await boot_id(self._runners[server], timeout=self._timeout)
        except Unavailable as e:
            if before != UNREACHABLE:
                log.warn("storage server {server} does not answer: {reason}", server=server,
                         reason=e.reason)
            if server in self._runners:  # not removed meanwhile (a reload)
                self._set(server, UNREACHABLE, e.reason)
            return
        except (CometError, ValueError) as e:
            # It answered, but not with a boot id: reachable, its boot unknown.
            now_boot = None
            log.warn("storage server {server} did not tell its boot id: {error}",
                     server=server, error=e)
        if server not in self._runners:  # removed meanwhile (a reload)
            return
        self._set(server, REACHABLE, "")
        if now_boot is not None:
            self.boots[server] = now_boot
        if before == UNREACHABLE:
            log.info("storage server {server} answers again", server=server)
            self.due.add(server)
        if boot is not None and now_boot is not None and now_boot != boot:
            log.warn("storage server {server} has booted again (boot id {old} -> {new})",
                     server=server, old=boot, new=now_boot)
            self.due.add(server)

    def _set(self, server: str, state: str, reason: str) -> None:
        if self.states.get(server) != state:
            self._events.emit("storageserver.state", {"host": server}, state=state,
                              reason=reason)
        self.states[server] = state

    async def _restore_on(self, server: str) -> None:
        if self.states.get(server) != REACHABLE:
            return
        try:
            _, left = await self._restore(server)
        except Exception:
            log.failure("making the exports of {server} again failed", server=server)
            return
        if left == 0:
            self.due.discard(server)
