"""
Exports: a volume served over iSCSI by its server's tgt to one compute
host, with CHAP (its secret defined in that host's libvirt) and an
initiator ACL; and making again the exports a server lost (a reboot: tgt
keeps targets in memory only).
"""

from __future__ import annotations

import datetime

from twisted.internet.defer import Deferred, ensureDeferred

from comet.errors import Conflict, NotFound
from comet.model.locks import acquire_all, release_all
from comet.model.storage.names import SEED_DEV, volume_lock
from comet.model.storage.servers import undo
from comet.remote import tgt as _tgt
from comet.virt import DiskSpec


def export_intact(target, record, initiator: str | None = None) -> bool:
    """
    Whether tgt C{target} is volume C{record}'s whole export: a device on
    LUN 1, its CHAP account bound, and (if given) initiator address
    C{initiator} let in.
    """
    return (target.device is not None and record.chap_user in target.accounts
            and (initiator is None or initiator in target.acl))


class Exports:
    """
    @param store: the L{comet.store.Storage} tables.
    @param servers: the L{comet.model.storage.servers.Servers}.
    @param pools: the L{comet.model.storage.pools.Pools}.
    @param hypervisors: the libvirt adapter (CHAP secrets on compute hosts).
    @param initiators: the L{comet.model.initiators.Initiators} (the address each export admits).
    @param iqn_domain: C{[storage] iqn_domain}.
    @param clock: C{seconds()} (the month in a new target's name).
    @param intents: the L{comet.model.intents.Intents}.
    @param locks: the L{comet.model.locks.Locks}.
    @param owners: the L{comet.model.storage.owners.VMOwners}.
    """

    def __init__(self, store, servers, pools, hypervisors, initiators, iqn_domain: str, clock,
                 intents, locks, owners):
        self._store = store
        self._servers = servers
        self._pools = pools
        self._hypervisors = hypervisors
        self._initiators = initiators
        self._iqn_domain = iqn_domain
        self._clock = clock
        self._intents = intents
        self._locks = locks
        self._owners = owners

    def iqn(self, pool: str, volume: str) -> str:
        """The target name volume C{pool}/C{volume} gets when exported this month."""
        today = datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.timezone.utc)
        return _tgt.iqn(self._iqn_domain, pool, volume, today.date())

    async def export(self, pool, record, host: str) -> DiskSpec:
        """Export volume C{record} of C{pool} to C{host}; the iSCSI disk its domain gets."""
        server = self._servers.server(pool.server)
        if record.target and record.exported_to not in (None, host):
            raise Conflict(f"volume {record.name!r} is mapped to {record.exported_to}")
        if record.copy_host is not None:
            # The storage server's copy may be older than the one there:
            # exporting it would hand a guest stale data.
            raise Conflict(f"volume {record.name!r} has its newest data in a local copy on host"
                           f" {record.copy_host}: it is synced back when its VM stops there")
        iqn = self.iqn(pool.name, record.name)
        device = await server.zfs.device_of(record.zvol)
        # Only the host it is exported to may log in, and only with the CHAP account.
        initiator = await self._initiators.address(host, pool.server)
        tid = await server.tgt.export(iqn, device, record.chap_user, record.chap_secret,
                                      initiator=initiator)
        usage = f"comet-{record.chap_user}"
        try:
            await self._hypervisors.define_secret(host, record.secret_uuid, usage,
                                                  record.chap_secret)
            await self._store.update_volume(record.pool, record.name, target=iqn,
                                            exported_to=host, tid=tid)
        except BaseException:
            await undo(server.tgt.unexport(iqn), f"unexporting {iqn}")
            raise
        return self.spec(pool, record, iqn)

    def spec(self, pool, record, iqn: str | None = None) -> DiskSpec:
        """The iSCSI disk a domain gets for C{record}."""
        return DiskSpec.iscsi(record.dev, iqn or record.target or self.iqn(pool.name, record.name),
                              pool.server, lun=_tgt.LUN, username=record.chap_user,
                              secret_usage=f"comet-{record.chap_user}",
                              cdrom=record.dev == SEED_DEV)

    def unexport_d(self, record) -> Deferred:
        """L{unexport} as a Deferred (for an undo step)."""
        return ensureDeferred(self.unexport(record))

    async def unexport(self, record, forget_secret: bool = True) -> None:
        """
        Stop exporting volume C{record} (and remove its CHAP secret from the
        host, unless not C{forget_secret}: a fenced host, which no longer
        answers, keeps it).  Deleting the target ends its sessions: a fenced
        host's initiator, should it run still, can no longer write.
        """
        pool = await self._pools.pool(record.pool)
        server = self._servers.server(pool.server)
        current = await self._store.volume(record.pool, record.name)
        iqn = (current.target if current is not None else None) or self.iqn(
            pool.name, record.name)
        host = (current.exported_to if current is not None else None) or record.exported_to
        await server.tgt.unexport(iqn)
        if host is not None and forget_secret:
            try:
                await self._hypervisors.undefine_secret(host, record.secret_uuid)
            except NotFound:
                pass
        await self._store.update_volume(record.pool, record.name, target=None,
                                        exported_to=None, tid=None)

    # A VM migrating: its exports handed from one host to another -----------

    async def admit(self, record, host: str) -> None:
        """
        Let compute host C{host} log in to volume C{record}'s export too
        (its initiator address on the target, the CHAP secret in its
        libvirt), besides the host it is exported to: a migrating VM's
        destination opens its disks before the source lets them go.
        """
        pool = await self._pools.pool(record.pool)
        server = self._servers.server(pool.server)
        await server.tgt.admit(record.target, await self._initiators.address(host, pool.server))
        await self._hypervisors.define_secret(host, record.secret_uuid,
                                              f"comet-{record.chap_user}", record.chap_secret)

    async def withdraw(self, record, host: str, keep: str) -> None:
        """
        Compute host C{host} may no longer log in to volume C{record}'s
        export, which compute host C{keep} goes on using: its initiator
        address leaves the target (unless C{keep} shares it), its CHAP
        secret leaves its libvirt.  What is already gone is no error.
        """
        pool = await self._pools.pool(record.pool)
        server = self._servers.server(pool.server)
        address = await self._initiators.address(host, pool.server)
        if record.target and address != await self._initiators.address(keep, pool.server):
            try:
                await server.tgt.refuse(record.target, address)
            except NotFound:
                pass
        try:
            await self._hypervisors.undefine_secret(host, record.secret_uuid)
        except NotFound:
            pass

    async def hand_over(self, record, source: str, dest: str) -> None:
        """
        Volume C{record}'s export, admitted to both (L{admit}), is now
        C{dest}'s alone: recorded so, then withdrawn from C{source}.
        """
        await self._store.update_volume(record.pool, record.name, exported_to=dest)
        await self.withdraw(record, source, keep=dest)

    # Exports lost by their server (a reboot) --------------------------------

    async def recorded(self, server: str) -> list:
        """The volume records exported from C{server}'s pools, as recorded."""
        records = []
        for pool in await self._pools.pools():
            if pool.server == server:
                records += [r for r in await self._store.volumes(pool.name)
                            if r.target and r.exported_to]
        return records

    async def restore(self, record) -> str | None:
        """
        Make the export of volume C{record} again as recorded, if its server
        lost it (a storage server that reboots loses every tgt target): the
        same target name (not this month's: the initiator reconnects to the
        name it knows), LUN 1 on the zvol's device now (minors can change
        with an import), its CHAP account and password, the compute host's
        initiator address, and the target id it had when that id is free.  QEMU's
        iSCSI initiator keeps trying to log in again and resumes the guest's
        I/O once the target is back.

        Holds the volume's lock and its VM's while it works, so no start,
        stop or unmap changes the export under it: one that runs is a
        L{Conflict} here (try again later).  Whether the export is still
        recorded, and missing or incomplete, is read again under them.

        @return: what was done, or C{None} if the export was there already
            (or is no longer recorded).
        """
        volume = f"{record.pool}/{record.name}"
        self._intents.check(volume)
        locks = [volume_lock(self._locks, record.pool, record.name, "being exported again")]
        if record.vm_uuid is not None:
            # An interrupted operation on the VM is the reconciler's to finish first.
            self._intents.check(record.vm_uuid)
            vm = await self._owners.record(record.vm_uuid)
            label = f"VM {vm.name!r}" if vm is not None else f"VM {record.vm_uuid}"
            locks.insert(0, self._locks.lock(record.vm_uuid, label,
                                             "having its disks exported again"))
        await acquire_all(locks)
        try:
            current = await self._store.volume(record.pool, record.name)
            if current is None or not current.target or not current.exported_to:
                return None
            pool = await self._pools.pool(current.pool)
            server = self._servers.server(pool.server)
            # Only the host it is exported to may log in (as L{export} binds it).
            initiator = await self._initiators.address(current.exported_to, pool.server)
            found = next((t for t in await server.tgt.targets() if t.iqn == current.target),
                         None)
            if found is not None and export_intact(found, current, initiator):
                return None
            what = "was incomplete" if found is not None else "was missing"
            if found is not None:
                await server.tgt.unexport(current.target)
            device = await server.zfs.device_of(current.zvol)
            tid = await server.tgt.export(current.target, device, current.chap_user,
                                          current.chap_secret, initiator=initiator,
                                          tid=current.tid)
            if tid != current.tid:
                await self._store.update_volume(current.pool, current.name, tid=tid)
            return (f"the export of volume {current.pool}/{current.name} to"
                    f" {current.exported_to} {what} on {pool.server}: target {current.target}"
                    f" (tid {tid}) made again with LUN {_tgt.LUN} on {device} and CHAP account"
                    f" {current.chap_user}")
        finally:
            await release_all(locks)
