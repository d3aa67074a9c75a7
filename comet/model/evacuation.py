"""
A host's maintenance and evacuation (C{POST /hosts/:h/maintenance},
C{POST /hosts/:h/evacuate}): the checks and the one task; each VM is moved
by the crash-safe operations that exist for it.

Evacuating a host in maintenance moves every VM placed on it, one at a time,
as one task whose message gives each VM's outcome:

  - running or paused: migrated live (L{comet.model.operations.vm_migrate})
    to the host the placement rule picks among the others;
  - shut off but still placed there: its placement is released
    (L{comet.model.operations.vm_stop}: domain undefined, disks unexported).
    A stopped VM is defined afresh wherever it next starts, so there is
    nothing to move;
  - anything else (C{other}, a host that stopped answering, another
    operation holding it, no host fitting it) is named with the reason, and
    the task fails, after the others were moved.

Fenced (the admin's word that the host is off for good; refused while it
answers, since its guests could still be writing to their disks): every VM
placed on it is taken off it and started elsewhere
(L{comet.model.operations.vm_fence}), except a local-copy mode VM, whose
disks' newest data is on that host: named, with the reason, and left there.
"""

from __future__ import annotations

from comet.errors import CometError, Conflict, Unavailable
from comet.model.disk_modes import LOCAL
from comet.model.operations import Context, vm_fence, vm_stop
from comet.model.tasks import CURRENT_TASK, Target


class HostEvacuations:
    """
    @param vms: the L{comet.model.vms.VMModel} (reads, locks and moves VMs).
    @param context: the operations' L{Context}.
    """

    def __init__(self, vms, context: Context):
        self._vms = vms
        self._ctx = context

    async def evacuate(self, host: str, fenced: bool = False):
        """
        Start the task that empties host C{host}; answers the task.

        @raise NotFound: there is no such host.
        @raise Conflict: it is not in maintenance, or (C{fenced}) it answers.
        @raise Unavailable: it does not answer (not C{fenced}).
        """
        hosts = self._ctx.hosts
        hosts.config(host)
        await hosts.load()
        if not hosts.in_maintenance(host):
            raise Conflict(f"compute host {host!r} is not in maintenance; put it in maintenance"
                           " first, so that nothing is placed on it again")
        state = (await hosts.get(host)).state
        if fenced and state == "connected":
            raise Conflict(f"compute host {host!r} answers: its guests may still be writing to"
                           " their disks, so they cannot be started elsewhere; evacuate it"
                           " without fenced (live migration)")
        if not fenced and state != "connected":
            raise Unavailable(f"compute host {host!r} does not answer, so its VMs cannot"
                              ' migrate; if it is off for good, evacuate it {"fenced": true}')
        how = "fenced evacuation" if fenced else "evacuation"

        async def job(task):
            records = [r for r in await self._ctx.vms.list(None) if r.host == host]
            outcomes = []
            for i, record in enumerate(records, 1):
                try:
                    done = await (self._fence(record) if fenced else self._move(record, host))
                    outcomes.append(f"{record.cluster}/{record.name}: {done}")
                except CometError as e:
                    outcomes.append(f"{record.cluster}/{record.name}: FAILED: {e.said()}")
                await task.progress(100 * i // len(records), outcomes[-1])
            failed = sum(1 for o in outcomes if ": FAILED: " in o)
            summary = (f"{how} of host {host!r}: {len(records) - failed} of {len(records)}"
                       " VM(s) moved")
            text = "; ".join([summary] + outcomes)
            if failed:
                raise Conflict(text)
            return text

        return await self._ctx.tasks.start(Target("host", {"name": host}), job,
                                           f"{how} of host {host!r}")

    async def _locked(self, record, doing: str):
        """The VM now (with its phase) and its lock, held for the current task."""
        vm = await self._vms.get(record.cluster, record.name)
        lock = self._vms.lock(vm, doing)
        await lock.acquire()
        try:
            task_id = CURRENT_TASK.get()
            if task_id is not None:
                await lock.set_task(task_id)
            vm = await self._vms.get(record.cluster, record.name)
        except BaseException:
            await lock.release()
            raise
        return vm, lock

    async def _move(self, record, host: str) -> str:
        vm = await self._vms.get(record.cluster, record.name)
        if vm.record.host != host:
            return f"no longer on {host!r}"
        if vm.phase in ("running", "paused"):
            return await self._vms.move(record.cluster, record.name)
        if vm.phase != "shutoff":
            raise Conflict(f"VM {vm.name!r} is {vm.state} on {host!r}; only a running, paused"
                           " or shut-off VM can be moved")
        vm, lock = await self._locked(record, "released by an evacuation")
        try:
            if vm.record.host != host or vm.phase != "shutoff":
                raise Conflict(f"VM {vm.name!r} changed meanwhile (now {vm.state} on"
                               f" {vm.record.host!r}); evacuate again")
            return await vm_stop.run(self._ctx, vm.record, 0, False)
        finally:
            await lock.release()

    async def _fence(self, record) -> str:
        vm, lock = await self._locked(record, "taken off a fenced host")
        try:
            if vm.record.host != record.host:
                return f"no longer on {record.host!r}"
            if vm.record.disk_mode == LOCAL:
                # Its disks' newest data is on the dead host (issue 21): a
                # start elsewhere would hand the guest the storage server's
                # older copy.  Reported, never overwritten.
                raise Conflict(
                    f"VM {vm.name!r} runs its disks in local copies on {record.host!r}"
                    " (disk_mode local): their newest data is there, so it is not started"
                    " elsewhere from the storage servers' older copies; it stops or starts"
                    f" again once {record.host!r} answers")
            return await vm_fence.run(self._ctx, vm.record)
        finally:
            await lock.release()
