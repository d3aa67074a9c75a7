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

    def _now(self) -> int:
        return int(self._clock.seconds())

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


class Operation:
    def __init__(self, intents: Intents, kind: str, obj: str):
        self._intents = intents
        self.kind = kind
        self.object = obj
        self.id = _uuid.uuid4().hex
        self.task_id = CURRENT_TASK.get()
        self.halted = False
        #: The row of the step whose body returned last, not yet marked done
        #: (marked with the next step's row).
        self.ended_row: int | None = None

    async def __aenter__(self) -> "Operation":
        self._intents.check(self.object)
        self._intents.live[self.id] = (self.kind, self.object)
        return self

    async def __aexit__(self, *exc) -> bool:
        if self.halted:
            # A "dead" operation being collected: it leaves its rows as a crash would.
            return False
        try:
            if self._intents._store is not None:
                await self._intents._store.finish(self.id)
        finally:
            self._intents.live.pop(self.id, None)
        return False

    def step(self, step: enum.Enum | str, /, **detail) -> "_Step":
        """
        A step: C{async with op.step(Step.CREATE_ZVOL, zvol=...)}, C{step} a
        member of the operation's steps enum (its value is what is written);
        a plain string is accepted for operations not yet moved to
        L{comet.model.operations}.
        """
        return _Step(self, step.value if isinstance(step, enum.Enum) else step, detail)

    async def _checkpoint(self, step: str, when: str) -> None:
        halt = self._intents.halt
        if halt is not None and halt(self.kind, step, when):
            self.halted = True
            frozen: Deferred = Deferred()
            self._intents.frozen.append(frozen)
            await frozen  # never fires: the "process" died here


class _Step:
    def __init__(self, op: Operation, name: str, detail: dict):
        self._op = op
        self._name = name
        self._detail = detail
        self._row: int | None = None

    async def __aenter__(self) -> None:
        op, intents = self._op, self._op._intents
        if intents._store is not None:
            ended, op.ended_row = op.ended_row, None
            self._row = await intents._store.plan(
                op.id, op.task_id, op.kind, op.object, self._name, self._detail,
                intents._now(), ended)
        await op._checkpoint(self._name, "before")

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            await self._op._checkpoint(self._name, "after")
            self._op.ended_row = self._row
        return False
