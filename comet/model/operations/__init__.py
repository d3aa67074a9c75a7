"""
Crash-safe operations: one module each, its forward steps and its repair
side by side.

An operation changes more than one thing (a libvirt domain, a tgt export,
a zvol, a record) and must survive a crash between any two of them: it
writes each step to the C{intents} table before doing it
(L{comet.model.intents}), and the reconciler (L{comet.model.reconcile})
finds the rows a dead process left and hands them to the operation's
repair, which finishes or undoes it by looking at what is really there.

The convention, for a module C{comet/model/operations/<name>.py}:

  - C{class Step(enum.Enum)}: its steps in the order they run; each value
    is the name written in the C{intents} table (and named by the crash
    hooks, L{comet.debug}), so a value never changes once rows may hold it;
  - C{async def run(ctx, ...)}: the forward operation, each step in
    C{async with op.step(Step.X, **detail)};
  - C{async def repair(ctx, object, steps) -> str}: finish or undo an
    interrupted run from its intent rows (L{comet.store.IntentRecord});
    what it did, one sentence; a L{comet.errors.CometError} (a host or
    server that does not answer) leaves it for a later pass;
  - C{OPERATION = OperationType(kinds, Step, repair)}, listed in
    L{REGISTRY} below.

C{ctx} is the L{Context}: the public collaborators (tables, hypervisors,
storage, intents, locks, clock) an operation runs against, the same for the
model that starts it and the reconciler that repairs it.  The models (e.g.
L{comet.model.vms.VMModel}) keep the public face: the checks, the locks,
the 409s, the tasks; then they call C{run}.

Adding an operation is adding one module and one line to L{REGISTRY}; the
crash tests (tests/model/operations, tests/integration/test_kill_steps.py)
enumerate every step of every registered operation.
"""

from __future__ import annotations

from typing import Mapping

from comet.model.operations import (
    attach, net_down, net_up, nic_attach, nic_detach, snapshot_delete, snapshot_revert,
    snapshot_take, vm_create, vm_delete, vm_fence, vm_migrate, vm_start, vm_stop, unmap,
    unmap_local, volume_create, volume_delete, volume_resize,
)
from comet.model.operations.context import Context, NoDisks, OperationType, VMDisks


def make_registry(*types: OperationType) -> dict[str, OperationType]:
    """Kind -> operation, for C{types}; a kind of two operations is a L{ValueError}."""
    registry: dict[str, OperationType] = {}
    for operation in types:
        for kind in operation.kinds:
            if kind in registry:
                raise ValueError(f"two operations of kind {kind!r}")
            registry[kind] = operation
    return registry


#: Intent kind -> its operation.
REGISTRY: Mapping[str, OperationType] = make_registry(
    vm_start.OPERATION,
    vm_stop.OPERATION,
    vm_create.OPERATION,
    vm_delete.OPERATION,
    vm_migrate.OPERATION,
    vm_fence.OPERATION,
    volume_create.OPERATION,
    volume_delete.OPERATION,
    volume_resize.OPERATION,
    snapshot_take.OPERATION,
    snapshot_delete.OPERATION,
    snapshot_revert.OPERATION,
    attach.OPERATION,
    unmap.OPERATION,
    unmap_local.OPERATION,
    net_up.OPERATION,
    net_down.OPERATION,
    nic_attach.OPERATION,
    nic_detach.OPERATION,
)

__all__ = ["Context", "NoDisks", "OperationType", "REGISTRY", "VMDisks"]
