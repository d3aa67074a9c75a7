"""
The NICs of a VM: C{/cluster/:c/vms/:v/nics}, a sub-collection like its
volumes (C{…/storages}).  Adding a NIC to a VM placed on a host makes its
network there (a C{private} NIC: the cluster's bridge and tunnel) and
hot-plugs it (live if the VM runs); a VM placed nowhere gets it at its next
start.  Removing one unplugs it (a task: the guest must let it go) and tears
the cluster's network down on the host once nothing there needs it.  The
crash-safe operations are L{comet.model.operations.nic_attach} and
L{comet.model.operations.nic_detach}; here are the checks, the lock, the
task and the events.
"""

from __future__ import annotations

import re

from comet.errors import Conflict, NotFound
from comet.model.events import or_silent
from comet.model.nics import MAX_NICS, PRIVATE, check_nic
from comet.model.operations import Context, nic_attach, nic_detach
from comet.model.tasks import Target
from comet.model.vm_phases import UNKNOWN, VM
from comet.store import NicRecord

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class VMNicModel:
    """
    @param context: the operations' L{Context} (the C{vms} table, hosts,
        hypervisors, networks, intents, tasks, events).
    @param vms: the L{comet.model.vms.VMModel} (reads, the VM's lock).
    """

    def __init__(self, context: Context, vms):
        self._ctx = context
        self._vms = vms
        self._hosts = context.hosts
        self._tasks = context.tasks
        self._events = or_silent(context.events)

    async def list(self, cluster: str, name: str) -> VM:
        """The VM whose NICs are asked for (its record lists them, in order)."""
        return await self._vms.get(cluster, name)

    async def get(self, cluster: str, name: str, mac: str) -> tuple[VM, NicRecord]:
        """
        VM C{name} and its NIC of MAC C{mac} (any case); 404 if it has none
        (C{mac} not a MAC at all too: it names nothing, as any other name).
        """
        vm = await self._vms.get(cluster, name)
        mac = mac.lower()
        for nic in vm.record.nics:
            if nic.mac == mac:
                return vm, nic
        what = mac if _MAC.fullmatch(mac) else f"{mac!r} (not a MAC like 52:54:00:12:34:56)"
        raise NotFound(f"VM {name!r} has no NIC {what}")

    async def add(self, cluster: str, name: str, network: str,
                  mac: str | None = None) -> tuple[VM, NicRecord]:
        """
        Give the VM a NIC on C{network} (with C{mac}, or one derived from
        its uuid and place), last in its order; hot-plugged if the VM is
        placed on a host.  409 if its host offers no bridge for C{network},
        if C{mac} is taken, or the VM has L{MAX_NICS} already.
        """
        asked = check_nic({"network": network, **({"mac": mac} if mac is not None else {})},
                          self._hosts.offered_networks())
        vm = await self._vms.get(cluster, name)
        async with self._vms.lock(vm, "adding a NIC"):
            vm = await self._vms.get(cluster, name)
            record = vm.record
            if vm.phase == UNKNOWN:
                raise Conflict(f"VM {name!r} is on host {record.host!r}, which does not answer;"
                               " a NIC cannot be added now")
            if len(record.nics) >= MAX_NICS:
                raise Conflict(f"VM {name!r} has {MAX_NICS} NICs, the most a VM may have")
            if asked.mac is not None and asked.mac in [n.mac for n in record.nics]:
                raise Conflict(f"VM {name!r} already has NIC {asked.mac}")
            host = record.host
            if host is not None and asked.network not in self._hosts.networks(host):
                raise Conflict(
                    f"VM {name!r} is on host {host!r}, which offers no bridge for network"
                    f" {asked.network!r}" + (" (it carries no private networks)"
                                             if asked.network == PRIVATE else ""))
            mac = asked.mac or await self._ctx.vms.free_mac(record.uuid, len(record.nics))
            record, nic = await nic_attach.run(self._ctx, record, asked.network, mac, MAX_NICS)
        self._events.emit("vm.changed", {"cluster": cluster, "name": record.name})
        return await self._vms.get(cluster, record.name), nic

    async def remove(self, cluster: str, name: str, mac: str):
        """
        Start a task that takes NIC C{mac} off the VM: unplugged (once the
        guest let it go, if the VM runs), forgotten, its private network
        torn down on the VM's host if nothing there needs it any more.
        """
        vm, nic = await self.get(cluster, name, mac)
        if vm.phase == UNKNOWN:
            raise Conflict(f"VM {name!r} is on host {vm.record.host!r}, which does not answer;"
                           " a NIC cannot be removed now")
        lock = self._vms.lock(vm, f"removing NIC {nic.mac}")
        await lock.acquire()

        async def job(task):
            try:
                await lock.set_task(task.id)
                current, _ = await self.get(cluster, name, nic.mac)
                record = await nic_detach.run(self._ctx, current.record, nic.mac)
            finally:
                await lock.release()
            self._events.emit("vm.changed", {"cluster": cluster, "name": record.name})
            return f"NIC {nic.mac} was taken off VM {name!r}"

        try:
            return await self._tasks.start(
                Target("vm", {"cluster": cluster, "name": name}), job,
                f"removing NIC {nic.mac} from VM {name!r}")
        except BaseException:
            await lock.release()
            raise
