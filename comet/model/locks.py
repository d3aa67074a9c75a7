"""
Locks with leases: one operation at a time per VM and per volume, and one
daemon per database.

B{Locks.}  An operation on a VM (its uuid) or a volume (C{<pool>/<volume>})
holds that object's lock from its request to its end; a second operation
meanwhile is a 409 that says what runs (and the task it runs as).  The lock
is a row of the C{locks} table (L{comet.store.locks}), so it outlives a crash
of the process holding it: what the next process finds half done stays
guarded until the reconciler has looked at it.  Each process also keeps the
locks it holds in memory (L{Locks.held}): a quick answer for a second request
in the same process before any SQL runs, and what the reconciler asks to
leave alone what this process is working on.

B{The daemon lease.}  Each process start is an I{owner}: a random id, with
its pid, its start time and the host and boot it runs on (a row of
C{owners}).  A daemon starting over a database another live daemon uses
refuses to start (L{LeaseHeld}): two would take each other's locks for dead
ones and repair each other's operations.  The owner renews its row every
L{RENEW_INTERVAL} seconds.

An owner is dead when its process provably is: on this host, a different
boot, no such pid, a zombie, or a pid now held by a process that started at
another time.  A stale renewal alone never makes an owner on this host dead
(a process stopped in a debugger, or a reactor stuck for a minute, still
runs).  Only for an owner on another host, whose pid cannot be looked at, is
a renewal older than L{STALE_AFTER} taken as its death: it is the only
evidence there is.  The reconciler releases the locks of dead owners
(L{comet.model.reconcile.Reconciler.release_dead_locks}), never those of a
live one.
"""

from __future__ import annotations

import os
import socket
import uuid as _uuid
from typing import Callable

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from comet.errors import Busy
from comet.model.tasks import CURRENT_TASK
from comet.store.locks import LockRecord, OwnerRecord

log = Logger()

#: Seconds between two renewals of the daemon's lease.
RENEW_INTERVAL = 10.0

#: Seconds without a renewal after which an owner on another host is dead.
STALE_AFTER = 6 * RENEW_INTERVAL


class LeaseHeld(Exception):
    """Another daemon process that still runs holds the database."""


def busy(label: str, doing: str, task_id: int | None) -> Busy:
    """The 409 for C{label} (C{VM 'web'}) locked while C{doing}, as task C{task_id}."""
    return Busy(f"{label} is busy: it is {doing}", task_id)


def boot_id() -> str:
    """This host's boot id ('' where there is none): a pid means nothing across boots."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def proc_stat(pid: int) -> tuple[str, int] | None:
    """
    (state, start time in clock ticks since boot) of process C{pid} from
    C{/proc}, or C{None} where that cannot be read.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold anything.
    fields = text[text.rfind(")") + 2:].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def this_process(clock=None) -> OwnerRecord:
    """A new owner for this process (a new id each time: each start is one)."""
    now = int(clock.seconds()) if clock is not None else 0
    stat = proc_stat(os.getpid())
    return OwnerRecord(
        owner=_uuid.uuid4().hex,
        pid=os.getpid(),
        hostname=socket.gethostname(),
        boot=boot_id(),
        proc_start=stat[1] if stat else None,
        started=now,
        renewed=now,
    )


def alive(owner: OwnerRecord, me: OwnerRecord, now: float,
          stale_after: float = STALE_AFTER) -> bool:
    """
    Whether C{owner}'s process may still run, as seen from C{me}; see the
    module docstring.  Reads C{/proc} (no disk: a pseudo-file).
    """
    if owner.owner == me.owner:
        return True
    if owner.hostname != me.hostname:
        return now - owner.renewed < stale_after
    if owner.boot and me.boot and owner.boot != me.boot:
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    stat = proc_stat(owner.pid)
    if stat is not None:
        state, started = stat
        if state in ("Z", "X"):
            return False
        if owner.proc_start is not None and started != owner.proc_start:
            return False  # the pid was reused
    return True


def describe(owner: OwnerRecord | None, name: str) -> str:
    if owner is None:
        return f"owner {name} (no longer recorded)"
    return f"owner {owner.owner} (pid {owner.pid} on {owner.hostname})"


class Locks:
    """
    The locks of this process, and its lease.

    @param store: the C{locks} and C{owners} tables (L{comet.store.Locks}),
        or C{None}: locks in memory only (models built without a database).
    @param clock: C{seconds()} (and C{callLater()} for the renewals).
    @ivar me: this process's L{OwnerRecord}.
    @ivar held: object -> (doing, task id) of the locks this process holds.
    """

    def __init__(self, store=None, clock=None, me: OwnerRecord | None = None):
        self._store = store
        self._clock = clock
        self.me = me if me is not None else this_process(clock)
        self.held: dict[str, tuple[str, int | None]] = {}
        self.leased = False
        self._renewing: LoopingCall | None = None

    def _now(self) -> int:
        return int(self._clock.seconds()) if self._clock is not None else 0

    def _alive_now(self) -> Callable[[OwnerRecord], bool]:
        """Whether another owner may still run, as seen from this process now (L{alive})."""
        me, now = self.me, self._now()
        return lambda other: alive(other, me, now)

    def lock(self, obj: str, label: str, doing: str) -> "Lock":
        """The lock of C{obj} (a VM uuid, C{<pool>/<volume>}), not yet taken."""
        return Lock(self, obj, label, doing)

    def busy(self, obj: str | None) -> bool:
        """Whether this process holds the lock of C{obj}."""
        return obj is not None and obj in self.held

    # The rows behind a L{Lock} (none without a database) -----------------------

    async def take_row(self, obj: str, task_id: int | None, doing: str) -> LockRecord | None:
        """Record this owner's lock of C{obj}; the other owner's lock if it holds it."""
        if self._store is None:
            return None
        return await self._store.acquire(obj, task_id, doing, self.me.owner, self._now())

    async def set_row_task(self, obj: str, task_id: int) -> None:
        """The locked operation on C{obj} runs as task C{task_id} from now on."""
        if self._store is not None:
            await self._store.set_task(obj, self.me.owner, task_id)

    async def drop_row(self, obj: str) -> None:
        """Forget this owner's lock of C{obj}."""
        if self._store is not None:
            await self._store.release(obj, self.me.owner)

    async def rows(self) -> list[LockRecord]:
        """Every lock row, every owner's (none without a database): what the manhole inspects."""
        return [] if self._store is None else await self._store.list()

    # The lease -----------------------------------------------------------------

    async def take_lease(self, database: str = "the database") -> None:
        """
        Record this process as an owner of the database, or raise
        L{LeaseHeld} naming the live owner that holds it.
        """
        me = self.me
        other = await self._store.take_lease(me, self._alive_now())
        if other is not None:
            raise LeaseHeld(
                f"another Comet (pid {other.pid} on {other.hostname}, owner {other.owner})"
                f" is running over {database}; two daemons on one database would take each"
                " other's locks and repairs. Stop it first, or give this one another"
                " database"
            )
        self.leased = True
        log.info("took the lease of {database} as owner {owner} (pid {pid})",
                 database=database, owner=me.owner, pid=me.pid)

    def start_renewing(self, interval: float = RENEW_INTERVAL) -> None:
        self._renewing = LoopingCall(lambda: ensureDeferred(self.renew()))
        self._renewing.clock = self._clock
        d = self._renewing.start(interval, now=False)
        d.addErrback(lambda f: log.failure("renewing the lease stopped", f))

    async def renew(self) -> None:
        """Bump this owner's renewal (in the database thread)."""
        try:
            there = await self._store.renew(self.me.owner, self._now())
        except Exception as e:
            log.warn("renewing the lease failed: {error}", error=e)
            return
        if not there:
            log.critical(
                "the lease of owner {owner} is gone from the database: another Comet took"
                " this one for dead", owner=self.me.owner)

    async def check_lease(self) -> bool:
        """
        Whether this process's owner row is still in the database, found by a
        write that changes nothing (so a database that takes no write raises
        here): what C{/health} asks.  C{False} without a database or lease.
        """
        if self._store is None or not self.leased:
            return False
        return await self._store.touch(self.me.owner)

    def stop_renewing(self) -> None:
        if self._renewing is not None and self._renewing.running:
            self._renewing.stop()
        self._renewing = None

    async def release_lease(self) -> None:
        """At a clean stop: the owner row goes (locks still held then are a dead owner's)."""
        self.stop_renewing()
        if self.leased:
            self.leased = False
            await self._store.drop_owner(self.me.owner)

    # Dead owners ---------------------------------------------------------------

    async def release_dead(self) -> list[tuple[LockRecord, OwnerRecord | None]]:
        """
        Release every lock whose owner is not this process and is dead, and
        forget dead owners; what was released, with its owner (C{None}: no
        longer recorded).  One transaction, in the database thread.
        """
        if self._store is None:
            return []
        return await self._store.release_dead(self.me.owner, self._alive_now())


class Lock:
    """
    One object's lock, for one operation: C{async with} it, or L{acquire} it
    in the request and L{release} it when the task it starts ends.
    """

    def __init__(self, locks: Locks, obj: str, label: str, doing: str):
        self._locks = locks
        self.object = obj
        self._label = label
        self._doing = doing
        self._held = False

    async def acquire(self) -> None:
        """Take the lock; L{Busy} naming what holds it if that is not possible."""
        locks, obj = self._locks, self.object
        mine = locks.held.get(obj)
        if mine is not None:
            raise busy(self._label, *mine)
        task_id = CURRENT_TASK.get()
        # In memory first (no await between the test and the set): a second
        # request of this process waits for no SQL to be refused.
        locks.held[obj] = (self._doing, task_id)
        try:
            other = await locks.take_row(obj, task_id, self._doing)
        except BaseException:
            locks.held.pop(obj, None)
            raise
        if other is not None:
            locks.held.pop(obj, None)
            raise busy(self._label, other.doing, other.task_id)
        self._held = True

    async def set_task(self, task_id: int) -> None:
        """The operation runs as task C{task_id} from now on (a 409 names it)."""
        if not self._held:
            return
        self._locks.held[self.object] = (self._doing, task_id)
        await self._locks.set_row_task(self.object, task_id)

    async def release(self) -> None:
        if not self._held:
            return
        self._held = False
        locks = self._locks
        try:
            await locks.drop_row(self.object)
        except Exception as e:
            # The database is closing (a stop with tasks in flight): the row
            # stays, a dead owner's; the next start releases it.
            log.warn("releasing the lock of {obj} failed: {error}", obj=self.object, error=e)
        finally:
            locks.held.pop(self.object, None)

    async def __aenter__(self) -> "Lock":
        await self.acquire()
        return self

    async def __aexit__(self, *exc) -> bool:
        await self.release()
        return False


async def acquire_all(locks) -> None:
    """Take every lock of C{locks}, or none (those taken are released again)."""
    taken = []
    try:
        for lock in locks:
            await lock.acquire()
            taken.append(lock)
    except BaseException:
        await release_all(taken)
        raise


async def release_all(locks) -> None:
    """Release C{locks}, the last taken first."""
    for lock in reversed(locks):
        await lock.release()


async def locked_task(tasks, locks, target, message: str, work):
    """
    Start a task about C{target} (a L{comet.model.tasks.Target}) that runs
    C{work(task)} (its final message) holding C{locks}, taken by the caller
    (L{acquire_all}): each is told the task's id, and all are released when
    the work ends, or at once if the task does not start.  The task.
    """

    async def job(task):
        try:
            for lock in locks:
                await lock.set_task(task.id)
            return await work(task)
        finally:
            await release_all(locks)

    try:
        return await tasks.start(target, job, message)
    except BaseException:
        await release_all(locks)
        raise
