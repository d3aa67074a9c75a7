"""
Intent before action: multi-step changes write each step before doing it.

Used as::

    async with ctx.intents.operation("vm.start", vm.uuid) as op:
        async with op.step(Step.DEFINE_DOMAIN, host=host):
            await hypervisors.define(host, spec)

where C{Step} is the operation's steps enum (L{comet.model.operations}); a
step's row holds the member's value, the string the reconciler and the crash
hooks see.

The step's row is written (C{planned}) before its body runs and marked
C{done} after the body returns, in the same transaction as the next step's
row; the operation's rows are deleted when it ends, whether it succeeded or
undid its own failure.  Rows that outlive their process are what a crash
interrupted: L{comet.model.reconcile} reads them at the next start and
finishes or undoes each operation.

A step whose body returned is marked done only with the next step's row
(one transaction per step, not two: a VM start has four steps, and under 50
concurrent starts every write queues in the one database thread).  A crash
between the two leaves the step C{planned} though its body ran: exactly
what a crash just before its C{done} would leave, which the reconciler has to
handle anyway (it checks whether a planned step happened).  The last step
is never marked: the operation's end deletes its rows.
"""

from __future__ import annotations

import enum
import uuid as _uuid
from typing import Callable

from twisted.internet.defer import Deferred

from comet.errors import Conflict
from comet.model.tasks import CURRENT_TASK

#: Tests: C{halt(kind, step, when)}, C{when} C{"before"} (row written, step
#: not run) or C{"after"} (step run, not marked done); C{True} freezes the
#: operation there for ever, as if the process had died.
Halt = Callable[[str, str, str], bool]


class Intents:
    """
    Writes operations' steps to the C{intents} table (or nowhere, when
    C{store} is C{None}: models built without one).

    @ivar live: ids of the operations this process is running; the
        reconciler leaves them alone.
    @ivar pending: see L{__init__}; set by the reconciler.
    @ivar halt: a L{Halt} hook for crash tests, or C{None}.
    """

    def __init__(self, store=None, clock=None):
        self._store = store
        self._clock = clock
        self.live: dict[str, tuple[str, str]] = {}
        #: object -> kind of an interrupted operation the reconciler could not
        #: repair yet (its host or server did not answer).  Until it is
        #: repaired, no new operation may start on the object: the repair
        #: would undo or finish it under the new one's feet.
        self.pending: dict[str, str] = {}
        self.halt: Halt | None = None
        #: The Deferreds halted operations wait on (for ever), so that a test
        #: can keep them (and so the frozen coroutines) from being collected.
        self.frozen: list[Deferred] = []

    def operation(self, kind: str, obj: str) -> "Operation":
        """A new operation of C{kind} on C{obj} (a VM uuid, C{<pool>/<volume>})."""
        return Operation(self, kind, obj)

    def check(self, obj: str) -> None:
        """Raise L{Conflict} if C{obj} has an interrupted operation not repaired yet."""
        pending = self.pending.get(obj)
        if pending is not None:
            raise Conflict(
                f"{obj} has an interrupted {pending} that the reconciler has not"
                " repaired yet (its host or storage server did not answer); try again"
                " when it is back"
            )

    def busy(self, obj: str) -> bool:
        """Whether this process runs an operation on C{obj} now."""
        return any(o == obj for _, o in self.live.values())

    # What an operation's steps write (through L{Operation} and its steps) ----

    async def plan(self, op: "Operation", step: str, detail: dict,
                   ended: int | None) -> int | None:
        """
        Write C{step} of C{op} (C{planned}), marking row C{ended} (the
        previous step's) done in the same transaction; the new row's id
        (C{None} without a table).
        """
        if self._store is None:
            return None
        return await self._store.plan(op.id, op.task_id, op.kind, op.object, step, detail,
                                      int(self._clock.seconds()), ended)

    async def end(self, op: "Operation") -> None:
        """C{op} ended (done, or undone by itself): its rows go, it is no longer live."""
        try:
            if self._store is not None:
                await self._store.finish(op.id)
        finally:
            self.live.pop(op.id, None)

    async def checkpoint(self, op: "Operation", step: str, when: str) -> None:
        """
        The L{halt} hook's point C{when} (C{before}/C{after}) C{step} of
        C{op}: if the hook says so, C{op} freezes here for ever.
        """
        if self.halt is not None and self.halt(op.kind, step, when):
            op.halted = True
            frozen: Deferred = Deferred()
            self.frozen.append(frozen)
            await frozen  # never fires: the "process" died here


class Operation:
    def __init__(self, intents: Intents, kind: str, obj: str):
        self.intents = intents
        self.kind = kind
        self.object = obj
        self.id = _uuid.uuid4().hex
        self.task_id = CURRENT_TASK.get()
        self.halted = False
        #: The row of the step whose body returned last, not yet marked done
        #: (marked with the next step's row).
        self.ended_row: int | None = None

    async def __aenter__(self) -> "Operation":
        self.intents.check(self.object)
        self.intents.live[self.id] = (self.kind, self.object)
        return self

    async def __aexit__(self, *exc) -> bool:
        if self.halted:
            # A "dead" operation being collected: it leaves its rows as a crash would.
            return False
        await self.intents.end(self)
        return False

    def leave_for_repair(self) -> None:
        """
        This operation failed in a way it cannot settle itself (a host
        that does not answer hides what its last step did): its rows stay,
        as a crash leaves them, for the reconciler to repair; until it has,
        no new operation starts on the object.
        """
        self.halted = True
        self.intents.live.pop(self.id, None)
        self.intents.pending[self.object] = self.kind

    def step(self, step: enum.Enum | str, /, **detail) -> "_Step":
        """
        A step: C{async with op.step(Step.CREATE_ZVOL, zvol=...)}, C{step} a
        member of the operation's steps enum (its value is what is written);
        a plain string is accepted for operations not yet moved to
        L{comet.model.operations}.
        """
        return _Step(self, step.value if isinstance(step, enum.Enum) else step, detail)


class _Step:
    def __init__(self, op: Operation, name: str, detail: dict):
        self._op = op
        self._name = name
        self._detail = detail
        self._row: int | None = None

    async def __aenter__(self) -> None:
        op = self._op
        ended, op.ended_row = op.ended_row, None
        self._row = await op.intents.plan(op, self._name, self._detail, ended)
        await op.intents.checkpoint(op, self._name, "before")

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            await self._op.intents.checkpoint(self._op, self._name, "after")
            self._op.ended_row = self._row
        return False
