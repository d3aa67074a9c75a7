"""
Live migration's public face (C{POST .../vms/:name/migrate}): the checks,
the destination (named, or picked by the placement rule among the other
hosts), the VM's lock and the task; the crash-safe operation itself is
L{comet.model.operations.vm_migrate}.
"""

from __future__ import annotations

from typing import Callable, Collection

from comet.errors import CometError, Conflict, InvalidInput, Unavailable
from comet.model.disk_modes import LOCAL
from comet.model.nics import networks_of
from comet.model.operations import Context, vm_migrate
from comet.model.placement import choose_host
from comet.model.tasks import CURRENT_TASK, Target

MiB = 1024 * 1024


class VMMigrations:
    """
    @param vms: the L{comet.model.vms.VMModel} (reads and locks VMs).
    @param context: the operations' L{Context}.
    @param compute: the C{[compute]} settings (migration timeout and downtime).
    @param phases: the phases a VM may migrate in.
    @param refusal: C{refusal(vm, action)}, the error for an action its phase forbids.
    """

    def __init__(self, vms, context: Context, compute, phases: Collection[str],
                 refusal: Callable[..., CometError]):
        self._vms = vms
        self._ctx = context
        self._compute = compute
        self._phases = phases
        self._refusal = refusal

    def _open_hosts(self, host: str | None):
        """
        The hosts other than C{host} that a VM could move to now, lazily:
        connected and not in maintenance (known without asking them).
        """
        if host is None:
            return
        hosts = self._ctx.hosts
        status = self._ctx.hypervisors.status
        for h in hosts.names():
            if h != host and not hosts.in_maintenance(h) and status(h).state == "connected":
                yield h

    def destinations(self, host: str | None) -> list[str]:
        """The hosts a VM on C{host} could migrate to now (L{_open_hosts})."""
        return list(self._open_hosts(host))

    def movable(self, host: str | None) -> bool:
        """
        Whether a VM on C{host} could migrate now.  Read for every VM shown,
        so it stops at the first open host instead of checking them all
        (with 100 hosts, the whole list cost ~0.5 ms per VM).
        """
        return next(self._open_hosts(host), None) is not None

    def _check(self, vm) -> None:
        if vm.phase not in self._phases:
            raise self._refusal(vm, "migrate")
        if vm.record.disk_mode == LOCAL:
            raise Conflict(f"VM {vm.name!r} runs its disks in a local copy on its host"
                           " (disk_mode local): it does not migrate live; stop it, and it"
                           " starts where placement puts it")

    async def migrate(self, cluster: str, name: str, host: str | None = None):
        """
        Start a task (about the VM) that moves the running or paused VM live
        to C{host}, or to the host the placement rule picks among the
        others.  Answers the task.

        @raise Conflict: the VM is not running or paused (or no other host
            fits it), C{host} is in maintenance, or another operation holds it.
        @raise InvalidInput: C{host} is the VM's own.
        @raise NotFound: there is no host C{host}.
        @raise Unavailable: the VM's host, or C{host}, does not answer.
        """
        vm, lock, dest = await self._prepare(cluster, name, host)
        source = vm.record.host

        async def job(task):
            try:
                await lock.set_task(task.id)

                async def progress(reading):
                    await task.progress(min(99, reading.percent),
                                        f"migrating VM {name!r} from {source!r} to {dest!r}:"
                                        f" {reading.memory_remaining // MiB} MiB of memory"
                                        " left to copy")

                return await self._run(vm, dest, progress)
            finally:
                await lock.release()

        try:
            return await self._ctx.tasks.start(
                Target("vm", {"cluster": cluster, "name": name}), job,
                f"migrating VM {name!r} from {source!r} to {dest!r}")
        except BaseException:
            await lock.release()
            raise

    async def move(self, cluster: str, name: str) -> str:
        """
        Move the running or paused VM live to the host the placement rule
        picks among the others, within the caller's task (a host's
        evacuation): the same checks, lock and operation as L{migrate}; what
        happened, one sentence.  Raises as L{migrate} does.
        """
        vm, lock, dest = await self._prepare(cluster, name, None)
        try:
            task_id = CURRENT_TASK.get()
            if task_id is not None:
                await lock.set_task(task_id)
            return await self._run(vm, dest, None)
        finally:
            await lock.release()

    async def _prepare(self, cluster: str, name: str, host: str | None):
        """The checks of L{migrate}; C{(vm, its lock (held), destination)}."""
        vm = await self._vms.get(cluster, name)
        self._check(vm)
        source = vm.record.host
        if host is not None:
            self._ctx.hosts.config(host)   # NotFound
            if host == source:
                raise InvalidInput(f"VM {name!r} is on host {host!r} already;"
                                   " name another host to migrate it to")
            if self._ctx.hosts.in_maintenance(host):
                raise Conflict(f"compute host {host!r} is in maintenance; VM {name!r}"
                               " cannot migrate there")
            missing = networks_of(vm.record.nics) - self._ctx.hosts.networks(host)
            if missing:
                raise Conflict(f"compute host {host!r} does not offer the networks"
                               f" {', '.join(sorted(missing))} VM {name!r} has NICs on")
            why = await self._ctx.hosts.cpu_misfit(host, vm.record.cpu_model)
            if why is not None:
                raise Conflict(f"compute host {host!r} cannot run the CPU VM {name!r} needs"
                               f" ({why})")
            status = self._ctx.hypervisors.status(host)
            if status.state != "connected":
                raise Unavailable(f"compute host {host!r} does not answer ({status.reason});"
                                  f" VM {name!r} cannot migrate there now")
        lock = self._vms.lock(vm, "migrating")
        await lock.acquire()
        try:
            vm = await self._vms.get(cluster, name)
            self._check(vm)
            dest = host if host is not None else await self._destination(vm)
        except BaseException:
            await lock.release()
            raise
        return vm, lock, dest

    async def _run(self, vm, dest: str, progress) -> str:
        compute = self._compute
        return await vm_migrate.run(
            self._ctx, vm.record, dest, vm.phase, compute.migration_timeout,
            compute.migration_max_downtime, progress)

    async def _destination(self, vm) -> str:
        """The host the placement rule picks for C{vm} among the other connected ones."""
        record = vm.record
        hosts = self._ctx.hosts
        figures = hosts.figures()
        async with self._ctx.placing:
            others = self.destinations(record.host)
            candidates = [c for c in await hosts.candidates(figures, record.cpu_model)
                          if c.name in others]
            if not candidates:
                raise Conflict(f"VM {vm.name!r} cannot migrate: no other compute host"
                               " is connected and out of maintenance")
            return choose_host(candidates, record.memory, record.cpus,
                               networks_of(record.nics), record.cpu_model)
