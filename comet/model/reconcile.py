"""
The reconciler: after a crash, make libvirt, ZFS/tgt and Comet's records agree.

It runs when the daemon starts (after interrupted tasks are marked failed)
and then every C{[reconcile] interval} seconds.  Each run does two things.

1. B{Interrupted operations.}  The C{intents} table holds the steps of every
   operation a dead process had begun (L{comet.model.intents}).  Each is
   finished or undone by looking at what is really there, kind by kind:
   the operations of L{comet.model.operations.REGISTRY} by their own
   C{repair}, side by side with its forward steps (VM start, stop, create
   and delete: C{vm.start}, C{cluster.start}, C{vm.stop}, C{cluster.stop},
   C{vm.create}, C{vm.delete}; volume create and delete: C{volume.create},
   C{volume.delete}; attach and unmap: C{attach}, C{unmap}; snapshot take,
   delete and revert: C{snapshot}, C{snapshot.delete}, C{snapshot.revert};
   VM migrate: C{vm.migrate}; NIC hot-plug and unplug: C{nic.attach},
   C{nic.detach}): each module's docstring says how it is repaired.

   The task the operation ran under (if any) is marked failed with what was
   repaired (one that had finished, having left the rest to the reconciler,
   stays finished and gains the repair), and the operation's rows are deleted.  An operation whose host
   or server does not answer is left for a later run.

2. B{Leftovers no record owns}, found by name and tied to this database
   (L{comet.model.leftovers}):

   - a domain C{comet-<uuid>} whose uuid is a VM of this database placed on
     another host (or nowhere) is destroyed and undefined;
   - a VM placed on a host (that answers) with no domain there is unplaced;
   - a tgt target C{iqn.<date>.<iqn_domain>:<pool>.<volume>} of a volume of
     this database that does not record that target is deleted.

   And what records own but is missing: the tgt export of a volume
   recorded as exported (a VM placed on a host, a mapped volume) that its
   storage server lost (a reboot: tgt keeps targets in memory only) is
   made again as recorded (L{restore_exports}), so QEMU's initiator logs
   in again and the guest's I/O resumes.  L{comet.model.serverwatch} calls
   it too, as soon as a server answers again or has booted.

   What Comet cannot prove it made is never touched: domains of uuids this
   database does not know (another Comet's, or no Comet's), zvols it has no
   record or intent for, targets of other naming domains or unknown volumes.
   Objects an operation of this process is working on are skipped.

Before both, the locks of owners that died are released
(L{Reconciler.release_dead_locks}, L{comet.model.locks}).
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from comet.errors import CometError, NotFound
from comet.model.leftovers import repaired
from comet.model.locks import describe
from comet.model.operations import REGISTRY
from comet.model.tasks import RESTARTED

log = Logger()


@attrs.frozen
class Pass:
    """How a reconciler pass went (what C{/health} and the metrics show)."""

    #: When it began and ended (the clock's seconds).
    began: float
    ended: float
    #: Repairs made (each one sentence of the log).
    repairs: int
    #: Why it failed (the error's text), or C{None} when it ended well.
    error: str | None = None


class Reconciler:
    """
    @param context: the operations' L{comet.model.operations.Context} (its
        intents, locks, tables and hypervisors).
    @param store: the C{intents} table (L{comet.store.Intents}).
    @param tasks: the C{tasks} table (L{comet.store.Tasks}).
    @param storage: the L{comet.model.storage.StorageModel}, or C{None}.
    @param clock: C{seconds()} and C{callLater()}.
    """

    def __init__(self, context, store, tasks, storage, clock, leftovers=None):
        self._ctx = context
        self._store = store
        self._tasks = tasks
        self._storage = storage
        self._clock = clock
        self._leftovers = leftovers
        self._loop: LoopingCall | None = None
        #: Seconds between passes (0: only the pass at start).
        self.interval = 0.0
        #: The last pass that ended (L{Pass}), C{None} before the first.
        self.last_pass: Pass | None = None
        #: When the pass running now began, or C{None}.
        self.running_since: float | None = None
        #: Passes ended, by outcome (C{ok}, C{failed}), and repairs made: the metrics.
        self.pass_counts: dict[str, int] = {"ok": 0, "failed": 0}
        self.repairs_total = 0

    # Running -------------------------------------------------------------------

    def start(self, interval: float) -> None:
        """Run every C{interval} seconds from now on (0: never)."""
        self.interval = interval
        if interval > 0:
            self._loop = LoopingCall(self._run_logged)
            self._loop.clock = self._clock
            self._loop.start(interval, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _run_logged(self) -> Deferred:
        d = ensureDeferred(self.run())
        d.addErrback(lambda f: log.failure("reconciling failed", f))
        return d

    async def run(self) -> list[str]:
        """
        One pass; the repairs made, one sentence each (each also logged).
        The locks of dead owners are released first (logged, not counted).
        How it went is kept (L{last_pass}) for C{/health} and the metrics.
        """
        began = self.running_since = self._clock.seconds()
        try:
            repairs = await self._pass()
        except BaseException as e:
            self._ended(Pass(began, self._clock.seconds(), 0, str(e) or type(e).__name__))
            raise
        self._ended(Pass(began, self._clock.seconds(), len(repairs)))
        return repairs

    def _ended(self, ended: Pass) -> None:
        self.running_since = None
        self.last_pass = ended
        self.pass_counts["ok" if ended.error is None else "failed"] += 1
        self.repairs_total += ended.repairs

    async def _pass(self) -> list[str]:
        await self.release_dead_locks()
        repairs = await self._interrupted()
        repairs += await self._leftovers.domains()
        # Each server's targets, listed once for both looks at them.
        listed: dict[str, list] = {}
        repairs += await self._leftovers.targets(listed)
        repairs += await self._leftovers.exports(listed)
        repairs += await self._networks()
        return repairs

    async def _networks(self) -> list[str]:
        """
        The hosts' private networks made to match the placements
        (L{comet.model.networks.Networks.sweep}); the networks of clusters
        with a VM whose interrupted operation is not repaired yet are not
        removed.
        """
        networks = self._ctx.networks
        if networks is None or not networks.hosts():
            return []
        unsettled = set()
        for row in await self._store.list():
            try:
                record = await self._ctx.vms.by_uuid(row.object)
            except NotFound:
                continue
            if record.vni is not None:
                unsettled.add(record.vni)
        return await networks.sweep(unsettled)

    async def release_dead_locks(self) -> list[str]:
        """
        Release the locks of owners that are not this process and are dead
        (L{comet.model.locks.alive}: never for a stale renewal alone while its
        process runs on this host); a task one names that is still C{running}
        is marked failed.  One sentence per lock released, each logged.
        """
        released = []
        for lock, owner in await self._ctx.locks.release_dead():
            task = f", task {lock.task_id}" if lock.task_id is not None else ""
            text = (f"the lock of {lock.object} ({lock.doing}{task}) held by"
                    f" {describe(owner, lock.owner)}, which no longer runs, was released")
            log.warn("reconciler: {repair}", repair=text)
            released.append(text)
            if lock.task_id is None:
                continue
            try:
                record = await self._tasks.get(lock.task_id)
            except NotFound:
                continue
            if record.status == "running":
                await self._tasks.finish(
                    lock.task_id, "failed",
                    f"{RESTARTED}; its lock on {lock.object} was released",
                    int(self._clock.seconds()))
        return released

    # Interrupted operations -------------------------------------------------

    async def _interrupted(self) -> list[str]:
        operations: dict[str, list] = {}
        for row in await self._store.list():
            operations.setdefault(row.operation, []).append(row)
        repairs: list[str] = []
        by_task: dict[int, list[str]] = {}
        for op_id, steps in operations.items():
            first = steps[0]
            if op_id in self._ctx.intents.live or self._ctx.busy(first.object):
                continue
            operation = REGISTRY.get(first.kind)
            try:
                if operation is not None:
                    what = await operation.repair(self._ctx, first.object, steps)
                else:
                    what = f"no repair is known for {first.kind!r}; its records were dropped"
            except CometError as e:
                log.warn("reconciler: {kind} of {obj} cannot be repaired now ({reason});"
                         " will try again", kind=first.kind, obj=first.object, reason=e.reason)
                self._ctx.intents.pending[first.object] = first.kind
                continue
            await self._store.finish(op_id)
            self._ctx.intents.pending.pop(first.object, None)
            done = [s.step for s in steps if s.state == "done"]
            text = (f"interrupted {first.kind} of {first.object}"
                    f" (steps done: {', '.join(done) or 'none'}): {what}")
            repaired(repairs, text)
            if first.task_id is not None:
                by_task.setdefault(first.task_id, []).append(f"{first.kind} of {first.object}: {what}")
        for task_id, whats in by_task.items():
            await self._task_repaired(task_id, whats)
        return repairs

    async def _task_repaired(self, task_id: int, whats: list[str]) -> None:
        """
        Record on task C{task_id} what was repaired.  A task that had
        finished (an operation that said what it did and left the rest to
        the reconciler: a migration whose records could not be written)
        stays finished, its message followed by the repair; any other was
        cut short by a crash, and is failed with it.
        """
        now = int(self._clock.seconds())
        repaired_text = '; '.join(whats)
        try:
            record = await self._tasks.get(task_id)
        except NotFound:
            return
        if record.status == "finished":
            await self._tasks.finish(
                task_id, "finished",
                f"{record.message}; the reconciler finished it: {repaired_text}", now)
            return
        await self._tasks.finish(task_id, "failed", f"{RESTARTED}; repaired: {repaired_text}", now)

    async def restore_exports(self, server: str,
                              listed: list | None = None) -> tuple[list[str], int]:
        """L{comet.model.leftovers.Leftovers.restore_exports}."""
        return await self._leftovers.restore_exports(server, listed)
