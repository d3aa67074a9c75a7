"""
Templates: what a new VM is made from (memory, CPUs, and optionally a base
volume its disk is cloned from).
"""

from __future__ import annotations

from typing import Awaitable, Callable

from comet.errors import InvalidInput, NotFound
from comet.model.clusters import validate_name
from comet.model.cpus import check_cpu_model_value
from comet.model.disk_modes import check_disk_mode
from comet.model.events import or_silent
from comet.model.nics import check_nics
from comet.store import TemplateRecord

MIN_MEMORY = 64


async def _no_storage(pool: str, volume: str) -> None:
    raise NotFound(f"storage pool {pool!r} does not exist (no storage is configured)")


class TemplateModel:
    """
    @param check_disk: C{async check_disk(pool, volume)} raises if the base
        volume does not exist: the storage model's; by default one that
        knows no pool (no storage is configured).
    @param events: the L{comet.model.events.EventLog} told of each change.
    """

    def __init__(self, templates, hosts, clock,
                 check_disk: Callable[[str, str], Awaitable[None]] = _no_storage, events=None):
        self._templates = templates
        self._events = or_silent(events)
        self._hosts = hosts
        self._clock = clock
        self.check_disk = check_disk

    async def _check(self, memory, cpus, disk) -> None:
        if memory is not None and memory < MIN_MEMORY:
            raise InvalidInput(f"memory must be at least {MIN_MEMORY} MB, not {memory}")
        if cpus is not None:
            most = await self._hosts.max_cpus()
            if most is not None and cpus > most:
                raise InvalidInput(f"cpus must be at most {most} (the largest host), not {cpus}")
        if disk:
            validate_name("pool", disk["pool"])
            validate_name("volume", disk["volume"])
            await self.check_disk(disk["pool"], disk["volume"])

    def list(self):
        return self._templates.list()

    def get(self, name: str):
        return self._templates.get(name)

    def _networks(self, nics) -> tuple[str, ...]:
        """The networks of a body's C{nics} (no MACs: many VMs share a template)."""
        return tuple(n.network for n in check_nics(nics, self._hosts.offered_networks(),
                                                   macs=False))

    async def create(self, name: str, memory: int, cpus: int, disk: dict | None,
                     nics: list | None = None, cpu_model: str | None = None,
                     disk_mode: str = "iscsi") -> TemplateRecord:
        """
        C{nics}: C{[{"network": NAME}, ...]}, the NICs of the VMs made from
        it; C{cpu_model}: the CPU model they need (C{None}: none);
        C{disk_mode}: where they run their disks (C{iscsi} or C{local}).
        """
        validate_name("template", name)
        check_cpu_model_value(cpu_model)
        check_disk_mode(disk_mode)
        networks = self._networks(nics if nics is not None else [])
        await self._check(memory, cpus, disk)
        record = await self._templates.create(
            name,
            memory,
            cpus,
            disk["pool"] if disk else None,
            disk["volume"] if disk else None,
            int(self._clock.seconds()),
            networks,
            cpu_model,
            disk_mode,
        )
        self._events.emit("template.created", {"name": record.name})
        return record

    async def update(self, name: str, changes: dict) -> TemplateRecord:
        """
        Change stored fields; C{"disk": None} removes the base volume,
        C{"cpu_model": None} the CPU model VMs made from it need.
        """
        if "name" in changes:
            validate_name("template", changes["name"])
        if "cpu_model" in changes:
            check_cpu_model_value(changes["cpu_model"])
        if "disk_mode" in changes:
            check_disk_mode(changes["disk_mode"])
        networks = self._networks(changes["nics"]) if "nics" in changes else None
        await self._templates.get(name)
        await self._check(changes.get("memory"), changes.get("cpus"), changes.get("disk"))
        columns = {k: v for k, v in changes.items()
                   if k in ("name", "memory", "cpus", "cpu_model", "disk_mode")}
        if "disk" in changes:
            disk = changes["disk"]
            columns["disk_pool"] = disk["pool"] if disk else None
            columns["disk_volume"] = disk["volume"] if disk else None
        if networks is not None:
            columns["nics"] = networks
        record = await self._templates.update(name, **columns)
        self._events.emit("template.changed", {"name": record.name},
                          **({"previous": {"name": name}} if record.name != name else {}))
        return record

    async def delete(self, name: str) -> None:
        await self._templates.delete(name)
        self._events.emit("template.deleted", {"name": name})
