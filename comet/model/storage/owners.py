"""
The VMs volumes belong to, read from the C{vms} table: storage answers
"whose disk is this" without the VM model (which depends on storage, not
the other way round).
"""

from __future__ import annotations

from comet.errors import NotFound


class VMOwners:
    """
    @param vms: the C{vms} table (L{comet.store.VMs}), or C{None} (no VMs:
        every volume is free, and a recorded owner counts as existing).
    """

    def __init__(self, vms=None):
        self._vms = vms

    async def record(self, vm_uuid: str | None):
        """The record of the VM C{vm_uuid}, or C{None}."""
        if vm_uuid is None or self._vms is None:
            return None
        try:
            return await self._vms.by_uuid(vm_uuid)
        except NotFound:
            return None

    async def exists(self, vm_uuid: str) -> bool:
        if self._vms is None:
            return True
        try:
            await self._vms.by_uuid(vm_uuid)
        except NotFound:
            return False
        return True

    async def name(self, vm_uuid: str) -> str:
        """The VM's name, quoted, for a message (its uuid if it is gone)."""
        if self._vms is not None:
            try:
                return repr((await self._vms.by_uuid(vm_uuid)).name)
            except NotFound:
                pass
        return vm_uuid
