"""
Virtual machines: Comet's records, placed on compute hosts while they run.

A VM has a I{phase}, read live:
  - C{stopped}: placed nowhere (its record, and its disks on central storage,
    are all there is); shown as C{shutoff} with C{host} C{null};
  - C{shutoff}, C{running}, C{paused}: its domain's state on its host;
  - C{unknown}: its host does not answer.

L{VM_ACTIONS} says which action is valid in which phase; it drives both the
409 for an action that is not, and the C{actions} field of the
representation, so the two cannot disagree.
"""

from __future__ import annotations

import sys
from itertools import repeat
from typing import Sequence

from twisted.internet.defer import DeferredSemaphore, ensureDeferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from comet.config import ComputeConfig
from comet.errors import CometError, Conflict, InvalidInput, NotFound, Unavailable
from comet.model.clusters import validate_name
from comet.model.events import or_silent
from comet.model.cpus import NOT_GIVEN, check_cpu_model_value
from comet.model.disk_modes import LOCAL, check_disk_mode
from comet.model.nics import check_nics
from comet.model.operations import Context, VMDisks, vm_create, vm_delete, vm_start, vm_stop
from comet.model.provision import requested
from comet.model.locks import locked_task
from comet.model.tasks import Target
from comet.model.vm_migration import VMMigrations
from comet.model.vm_local_start import LocalStarts
from comet.model.vm_phases import STOPPED, UNKNOWN, VM, VM_ACTIONS, conflict
from comet.store import VMRecord
from comet.store.vms import COMET_DOMAIN_PREFIX

log = Logger()

#: Smallest memory a VM may have, in MiB.
MIN_MEMORY = 64

#: Seconds a screenshot is reused before a new one is taken.
SCREENSHOT_TTL = 3.0

#: Seconds C{stop} waits for the guest to shut down when not told.
DEFAULT_STOP_TIMEOUT = 60


class VMModel:
    """
    The VM lifecycle: reads, checks and locks; the crash-safe operations
    themselves are in L{comet.model.operations}.

    @param context: the operations' L{Context} (tables, hypervisors, disks,
        intents, locks, tasks, clock).
    @param concurrency: VMs a cluster action acts on at once.
    """

    def __init__(self, context: Context, concurrency: int = 4, compute=None):
        self._ctx = context
        self._vms = context.vms
        self._templates = context.templates
        #: What the lifecycle reads and acts through (L{Context.libvirt}).
        self._libvirt = context.libvirt
        self._hosts = context.hosts
        self._tasks = context.tasks
        self._clock = context.clock
        self._events = or_silent(context.events)
        self._concurrency = concurrency
        self._migrations = VMMigrations(self, context, compute or ComputeConfig(),
                                        VM_ACTIONS["migrate"], conflict)
        self._local_starts = LocalStarts(context.vms, self._checked, self._locked_task,
                                         self._start)
        #: uuid -> (seconds, PNG bytes)
        self._screenshots: dict[str, tuple[float, bytes]] = {}
        #: The placement runs last read, and their domain names (L{states_by_cluster}).
        self._runs: tuple[object, list] = (None, [])

    @property
    def disks(self) -> VMDisks:
        """The VMs' disks (L{Context.disks})."""
        return self._ctx.disks

    @property
    def intents(self):
        return self._ctx.intents

    @property
    def locks(self):
        return self._ctx.locks

    # Reading ---------------------------------------------------------------

    async def _phase(self, record: VMRecord) -> str:
        if record.host is None:
            return STOPPED
        try:
            return await self._libvirt.domain_state(record.host, record.domain_name)
        except NotFound:
            # Placed, but its domain is gone (undefined behind Comet's back):
            # it is off; the reconciler tidies the record.
            return "shutoff"
        except Unavailable:
            return UNKNOWN

    async def get(self, cluster: str, name: str) -> VM:
        record = await self._vms.get(cluster, name)
        return self._vm(record, await self._phase(record))

    def _vm(self, record: VMRecord, phase: str) -> VM:
        return VM(record, phase, movable=self._migrations.movable(record.host),
                  host_bridges=self._hosts.bridges(record.host))

    async def list(self, cluster: str | None = None) -> list[VM]:
        """The VMs of a cluster with their live states: one bulk call per host."""
        return await self.with_phases(await self._vms.list(cluster))

    async def _host_domains(self, hosts) -> dict[str, dict[str, str] | None]:
        """The domain states of each host, by host; C{None} for one that does not answer."""
        hosts = sorted(hosts)
        # Every host at once, proved by one probe round: a list costs the
        # slowest host, not their sum.
        answers = await self._libvirt.domain_states_of(hosts)
        domains: dict[str, dict[str, str] | None] = {}
        for host in hosts:
            value = answers[host]
            if not isinstance(value, Failure):
                domains[host] = value
            elif value.check(CometError):
                domains[host] = None
            else:
                value.raiseException()
        return domains

    async def with_phases(self, records: Sequence[VMRecord]) -> list[VM]:
        domains = await self._host_domains({r.host for r in records if r.host is not None})
        return [self._vm(r, _phase(r.host, r.domain_name, domains)) for r in records]

    async def states_by_cluster(self) -> dict[str, tuple[str, ...]]:
        """
        The state of every VM, grouped by cluster (C{GET /cluster}): the same
        states as L{list}, from a narrow query instead of whole records, in
        the query's order.  The query gives the VMs by cluster and host, each
        group's domain names are made once (L{_named}), and each group's
        states are read from its host's in one C{map}: 10,000 VMs cost ~1 ms,
        not ~8.
        """
        placements = await self._vms.placement_runs()
        if self._runs[0] is not placements:
            self._runs = (placements, _named(placements, self._runs[1]))
        runs = self._runs[1]
        domains = await self._host_domains({run[1] for run in runs if run[1] is not None})
        by_cluster: dict[str, list[str]] = {}
        for cluster, host, _, names in runs:
            states = by_cluster.get(cluster)
            if states is None:
                states = by_cluster[cluster] = []
            on_host = domains.get(host) if host is not None else None
            if on_host is not None:
                states.extend(map(on_host.get, names, repeat("shutoff")))
            else:
                states.extend(repeat("shutoff" if host is None else UNKNOWN, len(names)))
        return {name: tuple(states) for name, states in by_cluster.items()}

    async def shown_states(self, cluster: str) -> list[tuple[VMRecord, str]]:
        """
        Each VM of C{cluster} with the state the API shows (L{VM.state}): what
        L{list} gives, without a L{VM} per row (a list may hold 10,000).
        """
        records = await self._vms.list(cluster)
        domains = await self._host_domains({r.host for r in records if r.host is not None})
        shown = []
        for record in records:
            host = record.host
            if host is None:
                shown.append((record, "shutoff"))
                continue
            on_host = domains[host]
            if on_host is None:
                shown.append((record, UNKNOWN))
            else:
                shown.append((record, on_host.get(COMET_DOMAIN_PREFIX + record.uuid, "shutoff")))
        return shown

    async def states(self, cluster: str) -> tuple[str, ...]:
        return tuple(vm.state for vm in await self.list(cluster))

    # Create, change, delete ----------------------------------------------------

    async def _check_size(self, memory: int | None, cpus: int | None) -> None:
        if memory is not None and memory < MIN_MEMORY:
            raise InvalidInput(f"memory must be at least {MIN_MEMORY} MB, not {memory}")
        if cpus is not None:
            if cpus < 1:
                raise InvalidInput(f"cpus must be at least 1, not {cpus}")
            most = await self._hosts.max_cpus()
            if most is not None and cpus > most:
                raise InvalidInput(f"cpus must be at most {most} (the largest host), not {cpus}")

    async def create(
        self,
        cluster: str,
        template: str,
        name: str | None = None,
        memory: int | None = None,
        cpus: int | None = None,
        nics: list | None = None,
        user_data: str | None = None,
        ssh_keys: list[str] | None = None,
        hostname: str | None = None,
        cpu_model=NOT_GIVEN,
        disk_mode: str | None = None,
    ) -> VM:
        """
        Record a new VM made from C{template} and give it its own disks.  If
        making the disks fails, the record is removed again.  NICs: the template's by default.
        With C{user_data}, C{ssh_keys} or C{hostname}: a seed (L{comet.model.provision}).
        C{cpu_model}: the CPU model it needs (C{None}: none; by default the template's).
        C{disk_mode}: C{iscsi} or C{local} (by default the template's).
        """
        if name is not None:
            validate_name("VM", name)
        validate_name("template", template)
        nics = None if nics is None else check_nics(nics, self._hosts.offered_networks())
        if cpu_model is not NOT_GIVEN:
            check_cpu_model_value(cpu_model)
        if disk_mode is not None:
            check_disk_mode(disk_mode)
        await self._check_size(memory, cpus)
        provisioning = requested(hostname, ssh_keys, user_data)
        template_record = await self._templates.get(template)
        if cpu_model is NOT_GIVEN:
            cpu_model = template_record.cpu_model
        record = await vm_create.run(self._ctx, cluster, name, template_record, memory, cpus,
                                     nics, provisioning, cpu_model, disk_mode)
        self._events.emit("vm.created", {"cluster": cluster, "name": record.name})
        return VM(record, STOPPED)

    async def update(
        self,
        cluster: str,
        name: str,
        new_name: str | None = None,
        memory: int | None = None,
        cpus: int | None = None,
        cpu_model=NOT_GIVEN,
    ) -> VM:
        """
        Change the stored definition.  A running VM keeps its live memory and
        CPUs (and CPU model) until its next start; a rename needs it shut off.
        """
        vm = await self.get(cluster, name)
        if new_name is not None and new_name != name:
            validate_name("VM", new_name)
            if vm.state != "shutoff":
                raise Conflict(f"VM {name!r} is {vm.state}; it can be renamed only while shut off")
        await self._check_size(memory, cpus)
        changes = {
            k: v
            for k, v in (("name", new_name), ("memory", memory), ("cpus", cpus))
            if v is not None
        }
        if cpu_model is not NOT_GIVEN:
            changes["cpu_model"] = check_cpu_model_value(cpu_model)
        record = await self._vms.update(cluster, name, **changes)
        self._events.emit("vm.changed", {"cluster": cluster, "name": record.name},
                          **({"previous": {"cluster": cluster, "name": name}}
                             if record.name != name else {}))
        return self._vm(record, vm.phase)

    async def delete(
        self, cluster: str, name: str, force: bool = False, keep_storage: bool = False
    ) -> None:
        """
        Delete a VM: 409 while it runs unless C{force} (then it is powered
        off); its domain is undefined, its disks destroyed unless
        C{keep_storage}.
        """
        vm = await self.get(cluster, name)
        async with self.lock(vm, "being deleted"):
            vm = await self.get(cluster, name)
            if vm.phase == UNKNOWN:
                raise conflict(vm, "delete")
            if vm.phase in ("running", "paused", "other") and not force:
                raise Conflict(
                    f"VM {name!r} is {vm.state}; power it off first or pass"
                    ' {"force": true}'
                )
            await vm_delete.run(self._ctx, vm.record, vm.phase, keep_storage=keep_storage)
        self._screenshots.pop(vm.record.uuid, None)
        self._events.emit("vm.deleted", {"cluster": cluster, "name": name})

    async def delete_cluster_vms(self, cluster: str) -> None:
        """Power off and delete every VM of C{cluster} (a forced cluster delete)."""
        for vm in await self.list(cluster):
            await self.delete(cluster, vm.name, force=True)

    # Actions -------------------------------------------------------------------

    def lock(self, vm: VM, doing: str):
        """
        The lock of C{vm} (L{comet.model.locks}), for an operation C{doing}:
        a L{Conflict} now if an interrupted operation on it is not repaired yet.
        """
        self.intents.check(vm.record.uuid)
        return self.locks.lock(vm.record.uuid, f"VM {vm.name!r}", doing)

    async def _checked(self, cluster: str, name: str, action: str) -> VM:
        vm = await self.get(cluster, name)
        if action not in vm.actions:
            raise conflict(vm, action)
        return vm

    async def act(self, cluster: str, name: str, action: str, **params) -> VM:
        """Run a quick action (all but C{stop}) and answer the VM after it."""
        vm = await self.get(cluster, name)
        async with self.lock(vm, f"running {action}"):
            vm = await self._checked(cluster, name, action)
            record = vm.record
            if action == "start":
                await self._start(vm)
            else:
                operation = {
                    "poweroff": self._libvirt.destroy,
                    "shutdown": self._libvirt.shutdown,
                    "reset": self._libvirt.reset,
                    "suspend": self._libvirt.suspend,
                    "resume": self._libvirt.resume,
                }[action]
                await operation(record.host, record.domain_name)
        return await self.get(cluster, name)

    async def start(self, cluster: str, name: str):
        """
        Start the VM: the VM once it runs, or, for a local-copy mode VM, a
        task (L{comet.model.vm_local_start.LocalStarts}).
        """
        vm = await self.get(cluster, name)
        if vm.record.disk_mode != LOCAL:
            return await self.act(cluster, name, "start")
        return await self._local_starts.start(cluster, name)

    async def _start(self, vm: VM, kind: str = "vm.start", progress=None) -> None:
        """
        Start C{vm} (locked by the caller).  A VM shut off on a host in
        maintenance is first taken off it (domain undefined, disks
        unexported: L{vm_stop}), so that the placement rule puts it on a host
        out of maintenance, as it would a stopped VM: maintenance means
        nothing starts there, not only nothing new.
        """
        record = vm.record
        if record.host is not None and vm.phase == "shutoff":
            await self._hosts.load()
            if self._hosts.in_maintenance(record.host):
                await vm_stop.run(self._ctx, record, 0, False)
                record = await self._vms.get(record.cluster, record.name)
        await vm_start.run(self._ctx, record, kind=kind, progress=progress)

    async def stop(
        self,
        cluster: str,
        name: str,
        timeout: float | None = None,
        force: bool = False,
    ):
        """
        Start a task (about the VM) that shuts the VM down (waiting up
        to C{timeout} seconds, then powering it off only with C{force}),
        undefines it from its host and releases its placement.  Answers the
        task.
        """
        vm = await self._checked(cluster, name, "stop")
        timeout = DEFAULT_STOP_TIMEOUT if timeout is None else timeout
        return await self._locked_task(
            vm, "stopping", f"stopping VM {name!r}",
            lambda task: vm_stop.run(self._ctx, vm.record, timeout, force))

    async def _locked_task(self, vm: VM, doing: str, message: str, work):
        """C{work(task)} as a task about C{vm} under its lock, taken now (L{locked_task})."""
        lock = self.lock(vm, doing)
        await lock.acquire()
        return await locked_task(self._tasks, [lock],
                                 Target("vm", {"cluster": vm.record.cluster, "name": vm.name}),
                                 message, work)

    async def migrate(self, cluster: str, name: str, host: str | None = None):
        """L{comet.model.vm_migration.VMMigrations.migrate}: a task."""
        return await self._migrations.migrate(cluster, name, host)

    async def move(self, cluster: str, name: str) -> str:
        """L{comet.model.vm_migration.VMMigrations.move}: inline, in the caller's task."""
        return await self._migrations.move(cluster, name)

    async def screenshot(self, cluster: str, name: str) -> bytes:
        """A PNG of the VM's screen, taken at most every L{SCREENSHOT_TTL} seconds."""
        vm = await self.get(cluster, name)
        if vm.phase not in ("running", "paused"):
            raise conflict(vm, "a screenshot")
        now = self._clock.seconds()
        cached = self._screenshots.get(vm.record.uuid)
        if cached is not None and now - cached[0] < SCREENSHOT_TTL:
            return cached[1]
        png = await self._libvirt.screenshot(vm.record.host, vm.record.domain_name)
        self._screenshots[vm.record.uuid] = (now, png)
        return png

    # Clusters ------------------------------------------------------------------

    async def cluster_action(self, cluster: str, action: str, **params):
        """
        Start a task that runs C{action} (C{start} or C{stop}) on every VM of
        the cluster, a few at a time; one VM failing does not stop the others,
        and the task's message lists each VM's outcome.
        """
        vms = await self.list(cluster)
        semaphore = DeferredSemaphore(self._concurrency)

        async def one(vm: VM) -> str:
            if action == "start" and vm.phase == "running":
                return f"{vm.name}: already running"
            if action == "stop" and vm.phase == STOPPED:
                return f"{vm.name}: already stopped"
            try:
                async with self.lock(vm, f"cluster {action}"):
                    current = await self._checked(cluster, vm.name, action)
                    if action == "start":
                        await self._start(current, kind="cluster.start")
                        return f"{vm.name}: started"
                    message = await vm_stop.run(
                        self._ctx,
                        current.record,
                        params.get("timeout", DEFAULT_STOP_TIMEOUT),
                        params.get("force", False),
                        kind="cluster.stop",
                    )
                    return f"{vm.name}: {message}"
            except CometError as e:
                return f"{vm.name}: FAILED: {e.said()}"

        async def job(task):
            done = [0]

            async def counted(vm):
                outcome = await semaphore.run(lambda: ensureDeferred(one(vm)))
                done[0] += 1
                await task.progress(100 * done[0] // max(1, len(vms)), outcome)
                return outcome

            outcomes = await gatherResults([ensureDeferred(counted(vm)) for vm in vms])
            failed = sum(1 for o in outcomes if "FAILED" in o)
            summary = f"cluster {cluster!r} {action}: {len(vms) - failed} of {len(vms)} VM(s) ok"
            text = "; ".join([summary] + list(outcomes))
            if failed:
                raise Conflict(text)
            return text

        return await self._tasks.start(Target("cluster", {"name": cluster}), job,
                                       f"{action} of cluster {cluster!r}")


def _named(runs, before: Sequence[tuple]) -> list[tuple[str, str | None, tuple, list[str]]]:
    """
    C{(cluster, host, uuids, domain names)} for each C{(cluster, host,
    uuids)} of L{VMs.placement_runs}; a group with the same uuids as in
    C{before} (the last result) keeps its names: a start moves one VM, and
    10,000 new names (and their hashes, at the first lookup) cost ~5 ms.
    """
    known = {(cluster, host): (uuids, names) for cluster, host, uuids, names in before}
    named = []
    for cluster, host, uuids in runs:
        kept = known.get((cluster, host))
        if kept is not None and kept[0] == uuids:
            names = kept[1]
        else:
            # Interned, as the state cache's are: one string per name, not two.
            names = [sys.intern(COMET_DOMAIN_PREFIX + uuid) for uuid in uuids]
        named.append((cluster, host, uuids, names))
    return named


def _phase(host: str | None, domain: str, domains: dict[str, dict[str, str] | None]) -> str:
    """A VM's phase from its placement and its host's domain states."""
    if host is None:
        return STOPPED
    states = domains.get(host)
    if states is None:
        return UNKNOWN
    return states.get(domain, "shutoff")
