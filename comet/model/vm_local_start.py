"""
A local-copy mode VM's start (issue 21) as a task: its disks are copied to
its host before its domain starts, which takes as long as the copy, so the
request answers a task at once whose progress is the copy's.  The start
itself is the VM model's (L{comet.model.operations.vm_start}); this holds
only how it runs as a task.
"""

from __future__ import annotations

from typing import Awaitable, Callable

MiB = 1024 * 1024


class LocalStarts:
    """
    @param vms: the C{vms} table.
    @param checked: C{checked(cluster, name, action)}: the VM, or the 409
        of an action its phase forbids (the VM model's check).
    @param locked_task: C{locked_task(vm, doing, message, work)}: the VM
        model's task that runs C{work(task)} under the VM's lock.
    @param start: C{start(vm, progress=...)}: the VM model's start of a locked VM.
    """

    def __init__(self, vms, checked: Callable[..., Awaitable],
                 locked_task: Callable[..., Awaitable], start: Callable[..., Awaitable]):
        self._vms = vms
        self._checked = checked
        self._locked_task = locked_task
        self._start = start

    async def start(self, cluster: str, name: str):
        """Start a task (about the VM) that copies its disks and starts it; the task."""
        vm = await self._checked(cluster, name, "start")

        async def work(task):
            await self._start(vm, progress=copy_progress(task, name))
            record = await self._vms.get(cluster, name)
            return (f"VM {name!r} runs on host {record.host!r}, its disks copied there"
                    " (disk_mode local)")

        return await self._locked_task(vm, "starting",
                                       f"starting VM {name!r}: copying its disks to its host", work)


def copy_progress(task, name: str):
    """
    A local start's C{progress(moved, total)}: the task's percentage and
    message, written only when the whole percentage moves (not for every
    piece of the stream).
    """
    shown = [-1]

    def progress(moved: int, total: int) -> None:
        percent = min(99, moved * 100 // total) if total else 0
        if percent != shown[0]:
            shown[0] = percent
            task.progress(percent, f"copying the disks of VM {name!r} to its host:"
                                   f" {moved // MiB} MiB of about {total // MiB} MiB"
                          ).addErrback(lambda _: None)

    return progress
