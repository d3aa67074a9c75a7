"""
What every crash-safe operation runs against: the L{Context} of its
collaborators, and the L{OperationType} each operation module declares.
"""

from __future__ import annotations

import enum
from typing import Any, Awaitable, Callable, Protocol, Sequence

import attrs
from twisted.internet.defer import DeferredLock

from comet.errors import Conflict
from comet.model.intents import Intents
from comet.model.locks import Locks
from comet.store import IntentRecord, VMRecord
from comet.virt import DiskSpec


class VMDisks(Protocol):
    """
    What the VM operations need of storage; the storage model provides it.
    Every method is given the VM's record (or uuid).
    """

    async def create(self, vm: VMRecord, template) -> None:
        """Make the VM's own disks (from its template's base volume)."""

    async def create_seed(self, vm: VMRecord, template, image: bytes) -> None:
        """Write the VM's first-boot seed C{image} to a CD-ROM disk of its own."""

    async def attach(self, vm: VMRecord, host: str,
                     progress: Callable[[int, int], object] | None = None) -> list[DiskSpec]:
        """
        Export the VM's disks to C{host}; the disks its domain gets.  A
        local-copy mode VM's are copied there, C{progress(moved, total)}
        told of the bytes as they move.
        """

    async def detach(self, vm: VMRecord, host: str | None) -> None:
        """Stop exporting the VM's disks (to C{host}, or wherever they are)."""

    async def fence(self, vm: VMRecord) -> None:
        """
        Stop exporting the VM's disks, on the storage servers alone: its host
        is fenced (off for good; it is not asked anything).
        """

    async def admit(self, vm: VMRecord, host: str) -> None:
        """
        Let C{host} open the VM's exported disks too (a migration's
        destination), the exports still recorded to the VM's host.
        """

    async def withdraw(self, vm: VMRecord, host: str, keep: str) -> None:
        """C{host} may no longer open the VM's disks, which host C{keep} goes on using."""

    async def hand_over(self, vm: VMRecord, source: str, dest: str) -> None:
        """The VM's disks, admitted to both hosts, are now exported to C{dest} alone."""

    async def delete(self, vm: VMRecord, keep_storage: bool = False) -> None:
        """
        Destroy the VM's own disks (unless C{keep_storage}) and release the
        others, leaving none of the VM's snapshots on any of them.
        """

    async def forget_secrets(self, vm: VMRecord, hosts: Sequence[str]) -> None:
        """
        Remove from C{hosts} the CHAP secrets an interrupted export of the
        VM's disks may have defined (of the disks not exported now).
        """

    async def discard_create(self, vm_uuid: str, pool: str, base: str) -> None:
        """
        Destroy what an interrupted create of VM C{vm_uuid} may have made
        in C{pool} from base volume C{base}: its disk and the base snapshot.
        """


class NoDisks:
    """VM disks when no storage is configured: VMs have none."""

    async def create(self, vm, template):
        if template.disk_pool is not None:
            raise Conflict(
                f"template {template.name!r} has a disk on pool {template.disk_pool!r},"
                " but no storage is configured"
            )

    async def create_seed(self, vm, template, image):
        raise Conflict("no storage is configured: a VM's first-boot seed needs a storage pool")

    async def attach(self, vm, host, progress=None):
        return []

    async def detach(self, vm, host):
        pass

    async def fence(self, vm):
        pass

    async def admit(self, vm, host):
        pass

    async def withdraw(self, vm, host, keep):
        pass

    async def hand_over(self, vm, source, dest):
        pass

    async def delete(self, vm, keep_storage=False):
        pass

    async def forget_secrets(self, vm, hosts):
        pass

    async def discard_create(self, vm_uuid, pool, base):
        pass


@attrs.define
class Context:
    """
    The collaborators of the operations (and of their repairs), public and
    built once by L{comet.model.make_models}: an operation reads and acts
    through these and nothing else.
    """

    #: The C{vms} table (L{comet.store.VMs}).
    vms: Any
    #: The C{templates} table.
    templates: Any
    #: The L{comet.virt.Hypervisors}: live reads, for whoever needs the host's
    #: own answer (the repairs).
    hypervisors: Any
    #: What the forward steps read and act through: a L{comet.virt.CachedStates}
    #: over C{hypervisors} (reads from memory, its own actions update them),
    #: or C{hypervisors} itself.
    libvirt: Any
    #: The L{comet.model.hosts.HostModel} (placement candidates, host config).
    hosts: Any
    #: The L{comet.model.tasks.TaskRunner}: long operations run as tasks.
    tasks: Any
    #: C{seconds()} and C{callLater()}.
    clock: Any
    #: The L{comet.model.storage.StorageModel} (its public parts: tables,
    #: servers, pools, exports, branches), or C{None} when no storage is
    #: configured: what the storage operations' repairs act through.
    storage: Any = None
    #: The VMs' disks on central storage (the storage model, or L{NoDisks}).
    disks: VMDisks = attrs.field(factory=NoDisks)
    #: Where operations write their steps (none unless wired to a table).
    intents: Intents = attrs.field(factory=Intents)
    #: One operation per object at a time (in memory only unless wired).
    locks: Locks = attrs.field(factory=Locks)
    #: Placements are chosen one at a time (L{comet.model.operations.domains.place}).
    placing: DeferredLock = attrs.field(factory=DeferredLock)
    #: The L{comet.model.events.EventLog} told of VMs created, changed and
    #: deleted (C{None}: no one).
    events: Any = None
    #: The VXLAN network identifiers clusters' private networks are given
    #: (C{[network] vni_range}).
    vnis: range = range(10000, 20000)
    #: The MTU of NICs on private networks (C{[network] mtu}).
    private_mtu: int = 1450
    #: The hosts' private networks (L{comet.model.networks.Networks}), or
    #: C{None}: no host carries any.
    networks: Any = None

    def busy(self, obj: str | None) -> bool:
        """
        Whether this process is working on C{obj} (a VM uuid, C{<pool>/<volume>})
        now: an operation runs on it or its lock is held.  The reconciler
        leaves it alone.
        """
        if obj is None:
            return False
        return self.intents.busy(obj) or self.locks.busy(obj)


#: A repair: C{repair(context, object, steps)} finishes or undoes the
#: interrupted operation on C{object} whose intent rows are C{steps}, and
#: answers what it did, one sentence.  A L{comet.errors.CometError} leaves
#: the operation for a later pass.
Repair = Callable[[Context, str, Sequence[IntentRecord]], Awaitable[str]]


@attrs.frozen
class OperationType:
    """What an operation module declares, for the registry and the crash tests."""

    #: The intent kinds its runs write (C{vm.start} and C{cluster.start}
    #: are one operation run on behalf of a VM or of its cluster).
    kinds: tuple[str, ...]
    #: Its steps, in the order they run: an C{enum.Enum} whose values are
    #: the step names written in the C{intents} table.
    steps: type[enum.Enum]
    repair: Repair
