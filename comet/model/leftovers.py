"""
Leftovers: what no record owns, and exports records own that their server
lost; the second half of each reconciler pass (L{comet.model.reconcile}).

  - a domain C{comet-<uuid>} whose uuid is a VM of this database placed on
    another host (or nowhere) is destroyed and undefined;
  - a VM placed on a host (that answers) with no domain there is unplaced;
  - a tgt target C{iqn.<date>.<iqn_domain>:<pool>.<volume>} of a volume of
    this database that does not record that target is deleted;
  - the tgt export of a volume recorded as exported that its storage server
    lost (a reboot) is made again as recorded (L{Leftovers.restore_exports}).

A qcow2 download's staging zvol is not swept here: Comet's tag on it says
only that I{a} Comet made it, and another one (sharing the storage servers,
as the testbed's daemons do) may be downloading into it now.  Its create's
intent is its only owner (L{comet.model.operations.volume_create}).

What Comet cannot prove it made is never touched, and objects an operation
of this process is working on are skipped (L{Context.busy}).
"""

from __future__ import annotations

import re

from twisted.logger import Logger

from comet.errors import CometError
from comet.model.operations import Context
from comet.model.operations.domains import remove_domain, unplace, vm_record
from comet.model.storage import export_intact
from comet.store.vms import COMET_DOMAIN_PREFIX

log = Logger()


def repaired(repairs: list[str], text: str) -> None:
    """Add C{text} (one repair, one sentence) to C{repairs}, and log it."""
    log.warn("reconciler: {repair}", repair=text)
    repairs.append(text)


class Leftovers:
    """
    @param context: the operations' L{Context} (VMs table, hypervisors,
        what this process is busy with).
    @param storage: the L{comet.model.storage.StorageModel}, or C{None}.
    @param iqn_domain: the naming domain of this Comet's targets.
    """

    def __init__(self, context: Context, storage=None, iqn_domain: str = "org.comet"):
        self._ctx = context
        self._storage = storage
        self._iqn_domain = iqn_domain

    def _hands_off(self, uuid: str) -> bool:
        """
        Whether VM C{uuid}'s domains are an operation's: one running now, or
        an interrupted one its repair could not settle yet (a migration
        whose source did not answer: the domain on its destination may be
        the one that runs).
        """
        return self._ctx.busy(uuid) or uuid in self._ctx.intents.pending

    async def domains(self) -> list[str]:
        """Domains of this database's VMs on the wrong host; placements with no domain."""
        repairs: list[str] = []
        ctx = self._ctx
        records = await ctx.vms.list(None)
        by_uuid = {r.uuid: r for r in records}
        for host in ctx.hypervisors.hosts:
            try:
                # names are all it needs: the cheap bulk call, not the full listing
                domains = await ctx.hypervisors.domain_states(host)
            except CometError:
                continue
            for name in domains:
                if not name.startswith(COMET_DOMAIN_PREFIX):
                    continue
                uuid = name[len(COMET_DOMAIN_PREFIX):]
                if uuid not in by_uuid or by_uuid[uuid].host == host:
                    continue
                record = await vm_record(self._ctx, uuid)
                if record is None or record.host == host or self._hands_off(uuid):
                    continue
                try:
                    await remove_domain(self._ctx, host, name)
                except CometError as e:
                    log.warn("reconciler: removing {d} from {h} failed: {r}", d=name, h=host,
                             r=e.reason)
                    continue
                repaired(repairs, f"domain {name} on {host} (VM {record.name!r}, placed"
                                        f" on {record.host or 'no host'}) was removed")
            for record in records:
                if record.host != host or record.domain_name in domains:
                    continue
                current = await vm_record(self._ctx, record.uuid)
                if current is None or current.host != host or self._hands_off(record.uuid):
                    continue
                try:
                    await unplace(ctx, current)
                except CometError as e:
                    log.warn("reconciler: unplacing VM {vm} failed: {r}", vm=record.name,
                             r=e.reason)
                    continue
                repaired(repairs, f"VM {record.name!r} was placed on {host} but had no"
                                        " domain there: its placement was released")
        return repairs

    async def targets(self, listed: dict[str, list]) -> list[str]:
        """
        tgt targets of this database's volumes that their records do not
        name; each server's listing is left in C{listed} (for L{exports}).
        """
        repairs: list[str] = []
        storage = self._storage
        if storage is None:
            return repairs
        pattern = re.compile(
            rf"^iqn\.[0-9]{{4}}-[0-9]{{2}}\.{re.escape(self._iqn_domain.lower())}:(.+)$")
        pools = await storage.pools()
        for server in storage.servers():
            volumes = {}
            for pool in pools:
                if pool.server == server:
                    for record in await storage.records.volumes(pool.name):
                        key = f"{pool.name}.{record.name}".lower().replace("_", "-")
                        volumes[key] = record
            if not volumes:
                continue
            tgt = storage.server(server).tgt
            try:
                targets = listed[server] = await tgt.targets()
            except CometError:
                continue
            for target in targets:
                match = pattern.match(target.iqn)
                record = volumes.get(match.group(1)) if match else None
                if record is None or record.target == target.iqn:
                    continue
                if self._ctx.busy(record.vm_uuid) or self._ctx.busy(f"{record.pool}/{record.name}"):
                    continue
                current = await storage.records.volume(record.pool, record.name)
                if current is not None and current.target == target.iqn:
                    continue
                try:
                    await tgt.unexport(target.iqn)
                except CometError as e:
                    log.warn("reconciler: deleting target {t} failed: {r}", t=target.iqn,
                             r=e.reason)
                    continue
                repaired(repairs, f"target {target.iqn} on {server} (volume"
                                        f" {record.pool}/{record.name}) was not recorded:"
                                        " deleted")
        return repairs

    async def exports(self, listed: dict[str, list]) -> list[str]:
        """
        Exports recorded but lost by their server, made again (every
        server), by the targets C{listed} this pass (the targets the pass
        deleted were none of a record's).
        """
        if self._storage is None:
            return []
        repairs: list[str] = []
        for server in self._storage.servers():
            done, _ = await self.restore_exports(server, listed.get(server))
            repairs += done
        return repairs

    async def restore_exports(self, server: str,
                              listed: list | None = None) -> tuple[list[str], int]:
        """
        Make again every export recorded on C{server} that the server does
        not have (or has only in part): L{comet.model.storage.exports.Exports.restore}.
        Objects this process is working on are left for later, as is a
        server that does not answer.

        @param listed: the server's targets, if listed just now (otherwise
            they are listed here).

        @return: the repairs (one sentence each, each logged) and how many
            exports are still missing (to try again).
        """
        storage = self._storage
        records = await storage.exports(server)
        if not records:
            return [], 0
        try:
            if listed is None:
                listed = await storage.targets(server)
            targets = {t.iqn: t for t in listed}
        except CometError as e:
            log.warn("reconciler: the exports on {server} cannot be checked now: {reason}",
                     server=server, reason=e.reason)
            return [], len(records)
        repairs: list[str] = []
        left = 0
        for record in records:
            target = targets.get(record.target)
            if target is not None and export_intact(target, record):
                continue
            if self._ctx.busy(record.vm_uuid) or self._ctx.busy(f"{record.pool}/{record.name}"):
                left += 1
                continue
            try:
                what = await storage.restore_export(record)
            except CometError as e:
                log.warn("reconciler: the export of {pool}/{name} on {server} cannot be made"
                         " again now: {reason}", pool=record.pool, name=record.name,
                         server=server, reason=e.reason)
                left += 1
                continue
            if what is not None:
                repaired(repairs, what)
        return repairs, left
