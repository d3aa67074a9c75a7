"""
The reconciler (L{comet.model.reconcile}): the crash tests of the operations
not yet in L{comet.model.operations} (those of the registered ones are in
tests/model/operations, over the same L{tests.model.operations.crash}
world), leftovers no record owns, lost exports, dead owners' locks, and its
periodic run.
"""

from __future__ import annotations

import uuid as _uuid

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from comet.errors import Conflict
from comet.config import ReconcileConfig
from comet.model.operations import snapshot_delete, unmap, vm_start
from tests.model.operations.test_volume_delete import FORCED as FORCED_DELETE
from comet.model.reconcile import Reconciler
from comet.model.storage import GiB, vm_disk_name
from comet.store import Intents as IntentTable
from comet.virt import DomainSpec
from tests._api import make_client
from tests.model.operations.crash import Crash, CrashBase, steps
from tests.model.operations import test_unmap
from tests.model.operations.test_vm_delete import STOPPED_DELETE



class LeftSnapshotCrashTests(CrashBase, TestCase):
    """
    The paths that take a VM's snapshots off a volume (issue 14), cut short:
    VM delete with an attached volume (and with C{keep_storage}), unmap of a
    volume the VM's snapshots cover, snapshot delete dropping an emptied
    branch, a forced volume delete.  Once repaired, no ZFS snapshot or
    branch is left that no record owns, and the volume can be deleted.
    """

    async def setUp(self):
        await super().setUp()
        await self.models.tasks.wait((await self.models.storage.create_volume(
            "pool1", "data", capacity_gb=1)).id)
        await self.models.vm_storages.attach("lab", "web", "pool1", "data")

    def left(self, volume: str = "data") -> list[str]:
        """Snapshots and branches of C{volume} (its own zvol aside)."""
        zvol = f"tank/comet/{volume}"
        return sorted(n for n in self.world.server.datasets
                      if n.startswith(zvol) and n != zvol)

    async def assertRecordedSnapshotsOnly(self, models) -> None:
        """Every ZFS snapshot C{@comet-<name>} is a recorded snapshot of a volume it lists."""
        for name in self.world.server.datasets:
            if "@comet-" not in name or "@comet-base-" in name:
                continue
            zvol, snapname = name.split("@", 1)
            volume = zvol.rsplit("/", 1)[1]
            owners = [r for r in await models.storage.snapshots_of_volume(f"pool1/{volume}")
                      if f"comet-{r.name}" == snapname]
            self.assertTrue(owners, f"{name} has no snapshot record")

    async def assertDeletable(self, models, volume: str = "data") -> None:
        await models.storage.delete_volume("pool1", volume)
        self.assertNotIn(f"tank/comet/{volume}", self.world.server.datasets)
        self.assertEqual(self.left(volume), [])

    async def test_vm_delete_each_step(self):
        """A VM delete cut short takes its snapshots (and branches) off the attached volume."""
        for keep in (False, True):
            for step in STOPPED_DELETE:
                for when in ("before", "after"):
                    await self.setUp()
                    await self.models.vm_snapshots.create("lab", "web", "one")
                    await self.models.vm_snapshots.create("lab", "web", "two")
                    await self.models.vm_snapshots.revert("lab", "web", "one")
                    self.assertNotEqual(self.left(), [])
                    crash = Crash("vm.delete", step, when)
                    await self.crash_during(crash, lambda: self.models.vms.delete(
                        "lab", "web", keep_storage=keep))
                    models, repairs = await self.world.restart()
                    self.assertTrue(any("interrupted vm.delete" in r for r in repairs), repairs)
                    await self.assertConsistent(models)
                    await self.assertRecordedSnapshotsOnly(models)
                    self.assertEqual(self.left(), [], (keep, step, when))
                    await self.assertDeletable(models)
                    own = vm_disk_name(self.uuid)
                    if keep:
                        self.assertEqual(self.left(own), [])
                        await self.assertDeletable(models, own)
                    self.assertEqual([n for n in self.world.server.datasets if "@" in n], [])

    async def test_unmap_each_step(self):
        """An unmap cut short: the volume leaves the VM's snapshots, which keep the VM's disk."""
        for step in [unmap.Step.DROP_SNAPSHOTS.value, unmap.Step.FORGET_ATTACHMENT.value]:
            for when in ("before", "after"):
                await self.setUp()
                await self.models.vm_snapshots.create("lab", "web", "one")
                crash = Crash("unmap", step, when)
                await self.crash_during(crash, lambda: self.models.vm_storages.unmap(
                    "lab", "web", "data"))
                models, repairs = await self.world.restart()
                self.assertTrue(any("interrupted unmap" in r for r in repairs), repairs)
                await self.assertConsistent(models)
                await self.assertRecordedSnapshotsOnly(models)
                self.assertEqual(self.left(), [])
                _, one = await models.vm_snapshots.get("lab", "web", "one")
                self.assertEqual(one.volumes, f'["pool1/{vm_disk_name(self.uuid)}"]')
                await self.assertDeletable(models)

    async def test_snapshot_delete_drop_branches_each_step(self):
        """A snapshot delete cut short drops the branch its last snapshot was on."""
        for step in steps(snapshot_delete.OPERATION):
            for when in ("before", "after"):
                await self.setUp()
                await self.models.vm_snapshots.create("lab", "web", "one")
                await self.models.vm_snapshots.create("lab", "web", "two")
                await self.models.vm_snapshots.revert("lab", "web", "one")
                crash = Crash("snapshot.delete", step, when)
                await self.crash_during(crash, lambda: self.models.vm_snapshots.delete(
                    "lab", "web", "two"))
                models, repairs = await self.world.restart()
                self.assertTrue(any("interrupted snapshot.delete" in r for r in repairs),
                                repairs)
                await self.assertConsistent(models)
                await self.assertRecordedSnapshotsOnly(models)
                self.assertEqual(self.left(), ["tank/comet/data@comet-one"], (step, when))
                self.assertEqual([n for n in self.world.server.datasets if "-old-" in n], [])

    async def test_forced_volume_delete_each_step(self):
        """A forced delete cut short is finished: the unrecorded snapshot and clone go too."""
        for step in [s.value for s in FORCED_DELETE]:
            for when in ("before", "after"):
                await self.setUp()
                await self.models.vm_storages.delete("lab", "web", "data")
                await self.models.tasks.wait((await self.models.storage.create_volume(
                    "pool1", "data", capacity_gb=1)).id)
                zfs = self.models.storage.server("s1").zfs
                await zfs.snapshot(["tank/comet/data"], "comet-snap-1")
                await zfs.clone("tank/comet/data@comet-snap-1", "tank/comet", "data-old-00ff")
                e = await self.assertFailure(ensureDeferred(
                    self.models.storage.delete_volume("pool1", "data")), Conflict)
                self.assertIn('{"force": true}', e.reason)
                crash = Crash("volume.delete", step, when)
                await self.crash_during(crash, lambda: self.models.storage.delete_volume(
                    "pool1", "data", force=True))
                models, repairs = await self.world.restart()
                self.assertTrue(any("interrupted volume.delete of pool1/data" in r
                                    for r in repairs), repairs)
                await self.assertConsistent(models)
                self.assertEqual([n for n in self.world.server.datasets if "/data" in n], [])
                self.assertIsNone(await models.storage.records.volume("pool1", "data"))

    async def test_plain_delete_refused_is_left(self):
        """
        A plain volume delete cut short before ZFS refused it (a snapshot no
        record owns): the repair reports it and keeps the volume, as the live
        409 would have; no intent is left to block the volume.
        """
        task = await self.models.vm_storages.unmap("lab", "web", "data")
        await self.models.tasks.wait(task.id)
        zfs = self.models.storage.server("s1").zfs
        await zfs.snapshot(["tank/comet/data"], "comet-left")
        crash = Crash("volume.delete", "destroy zvol", "before")
        await self.crash_during(crash, lambda: self.models.storage.delete_volume("pool1", "data"))
        models, repairs = await self.world.restart()
        [repair] = [r for r in repairs if "interrupted volume.delete of pool1/data" in r]
        self.assertIn("was not destroyed", repair)
        self.assertIn("the volume stays", repair)
        await self.assertConsistent(models)
        self.assertIsNotNone(await models.storage.records.volume("pool1", "data"))
        await models.storage.delete_volume("pool1", "data", force=True)
        self.assertEqual([n for n in self.world.server.datasets if "/data" in n], [])


class LeftoverTests(CrashBase, TestCase):
    """What no record owns, and what Comet cannot prove it made."""

    async def test_wrong_host_domain_removed(self):
        """A domain of a known VM on a host it is not placed on is removed."""
        await self.models.vms.act("lab", "web", "start")
        vm = (await self.models.vms.get("lab", "web")).record
        other = next(h for h in self.world.hv.hosts if h != vm.host)
        await self.world.hv.define(other, DomainSpec(
            name=vm.domain_name, uuid=vm.uuid, memory_mb=128, cpus=1, domain_type="test"))
        repairs = await self.models.reconciler.run()
        self.assertEqual(len(repairs), 1, repairs)
        self.assertIn(f"domain {vm.domain_name} on {other}", repairs[0])
        await self.assertConsistent(self.models)
        self.assertEqual(await self.phase(self.models), "running")

    async def test_placement_without_domain_released(self):
        """A VM placed on a host that has no domain for it is unplaced."""
        await self.models.vms.act("lab", "web", "start")
        vm = (await self.models.vms.get("lab", "web")).record
        await self.world.hv.destroy(vm.host, vm.domain_name)
        await self.world.hv.undefine(vm.host, vm.domain_name)
        repairs = await self.models.reconciler.run()
        self.assertEqual(len(repairs), 1, repairs)
        self.assertIn("placement was released", repairs[0])
        await self.assertConsistent(self.models)
        self.assertEqual(await self.phase(self.models), "stopped")

    async def test_unrecorded_target_of_known_volume_deleted(self):
        """A target of a volume of this database that its record does not name is deleted."""
        tgt = self.models.storage.server("s1").tgt
        iqn = self.models.storage.exporter.iqn("pool1", "base")
        await tgt.export(iqn, self.world.server.device("tank/comet/base"))
        repairs = await self.models.reconciler.run()
        self.assertEqual(len(repairs), 1, repairs)
        self.assertIn(iqn, repairs[0])
        await self.assertConsistent(self.models)

    async def test_not_ours_left_alone(self):
        """
        Domains of unknown uuids and not named comet-*, zvols without a
        record, and targets of unknown volumes or other naming domains are
        never touched.
        """
        host = self.world.hv.hosts[0]
        stranger = f"comet-{_uuid.uuid4()}"
        for name in (stranger, "someone-else"):
            await self.world.hv.define(host, DomainSpec(
                name=name, uuid=str(_uuid.uuid4()), memory_mb=128, cpus=1, domain_type="test"))
        zfs = self.models.storage.server("s1").zfs
        await zfs.create_volume("tank/comet", "manual", GiB)
        tgt = self.models.storage.server("s1").tgt
        device = self.world.server.device("tank/comet/manual")
        foreign = [self.models.storage.exporter.iqn("pool1", "manual"),
                   "iqn.2020-01.org.example:pool1.base"]
        for iqn in foreign:
            await tgt.export(iqn, device)
        self.assertEqual(await self.models.reconciler.run(), [])
        domains = await self.world.hv.list_domains(host)
        self.assertIn(stranger, domains)
        self.assertIn("someone-else", domains)
        self.assertIn("tank/comet/manual", self.world.server.datasets)
        self.assertEqual(sorted(t.iqn for t in self.world.server.targets.values()),
                         sorted(foreign))

    async def test_busy_objects_skipped(self):
        """What this process is working on now is not reconciled under it."""
        crash = Crash("vm.start", "define domain", "after")
        await self.crash_during(crash, lambda: self.models.vms.act("lab", "web", "start"))
        # Same process: the start is live (and the VM locked), so nothing is touched.
        self.assertEqual(await self.models.reconciler.run(), [])
        self.assertEqual(len(await IntentTable(self.world.db).list()), 3)


class LostExportTests(CrashBase, TestCase):
    """
    Exports a storage server lost (a reboot: tgt keeps its targets in
    memory only) are made again as recorded, so the initiator reconnects.
    """

    async def exported(self, models=None):
        """The records of pool1 that are exported, by name."""
        models = models or self.models
        return {r.name: r for r in await models.storage.exports("s1")}

    def assertExportedAsRecorded(self, record, tid, acl) -> None:
        server = self.world.server
        target = next((t for t in server.targets.values() if t.iqn == record.target), None)
        self.assertIsNotNone(target, f"no target {record.target}")
        self.assertEqual(target.tid, tid)
        self.assertEqual(target.luns, {1: server.device(record.zvol)})
        self.assertEqual(target.accounts, [record.chap_user])
        self.assertEqual(server.accounts[record.chap_user], record.chap_secret)
        self.assertEqual(target.acl, acl)

    async def test_lost_export_made_again(self):
        """A placed VM's target that vanished is back: same name, tid, LUN, CHAP account, ACL."""
        # Another target holds tid 1 while the VM starts, and is gone when the
        # export is made again: the id kept is the one recorded, not the first free.
        tgt = self.models.storage.server("s1").tgt
        other = "iqn.2020-01.org.example:someone.else"
        await tgt.export(other, self.world.server.device("tank/comet/base"))
        await self.models.vms.act("lab", "web", "start")
        disk = (await self.exported())[vm_disk_name(self.uuid)]
        tid, acl = next((t.tid, t.acl) for t in self.world.server.targets.values()
                        if t.iqn == disk.target)
        self.assertEqual(tid, 2)
        await tgt.unexport(other)
        await tgt.unexport(disk.target)
        self.assertEqual((self.world.server.targets, self.world.server.accounts), ({}, {}))
        repairs = await self.models.reconciler.run()
        self.assertEqual(len(repairs), 1, repairs)
        self.assertIn(f"{disk.target} (tid {tid}) made again", repairs[0])
        self.assertExportedAsRecorded(disk, tid, acl)
        await self.assertConsistent(self.models)
        self.assertEqual(await self.models.reconciler.run(), [])

    async def test_targets_listed_once_a_pass(self):
        """
        A pass lists each server's tgt targets once: the unrecorded targets
        it deletes and the lost exports it makes again are found in that one
        listing.
        """
        from comet.remote.tgt_commands import show_argv

        await self.models.vms.act("lab", "web", "start")
        runner = self.models.storage.server("s1").runner
        seen = len(runner.ran)
        self.assertEqual(await self.models.reconciler.run(), [])
        self.assertEqual([argv for argv in runner.ran[seen:] if argv == show_argv()],
                         [show_argv()])

    async def test_reboot(self):
        """
        A server that rebooted with its pool not imported yet: nothing can be
        exported (tried again); once imported, every export (a VM's own disk
        and a mapped volume) is back, on the zvols' new devices, same tids.
        """
        await test_unmap.UnmapCrashTests.data_volume(self)
        await self.models.vms.act("lab", "web", "start")
        answer = await self.client.post("/cluster/lab/vms/web/storages",
                                        {"pool": "pool1", "vol": "data"})
        self.assertEqual(answer.code, 201, answer.body)
        records = await self.exported()
        self.assertEqual(sorted(records), ["data", vm_disk_name(self.uuid)])
        tids = {t.iqn: t.tid for t in self.world.server.targets.values()}
        acls = {t.iqn: list(t.acl) for t in self.world.server.targets.values()}
        devices = {r.zvol: self.world.server.device(r.zvol) for r in records.values()}
        self.world.server.reboot(import_pools=False)
        self.assertEqual(await self.models.reconciler.run(), [])
        self.assertEqual(self.world.server.targets, {})
        self.world.server.import_pools()
        repairs = await self.models.reconciler.run()
        self.assertEqual(len(repairs), 2, repairs)
        for record in records.values():
            self.assertNotEqual(self.world.server.device(record.zvol), devices[record.zvol])
            self.assertExportedAsRecorded(record, tids[record.target], acls[record.target])
        await self.assertConsistent(self.models)

    async def test_incomplete_export_made_again(self):
        """A target left without its CHAP account is made again whole."""
        await self.models.vms.act("lab", "web", "start")
        disk = (await self.exported())[vm_disk_name(self.uuid)]
        tid, acl = next((t.tid, list(t.acl)) for t in self.world.server.targets.values()
                        if t.iqn == disk.target)
        runner = self.models.storage.server("s1").runner
        await runner.run(["tgtadm", "--lld", "iscsi", "--mode", "account", "--op", "delete",
                          "--user", disk.chap_user])
        repairs = await self.models.reconciler.run()
        self.assertEqual(len(repairs), 1, repairs)
        self.assertIn("was incomplete", repairs[0])
        self.assertExportedAsRecorded(disk, tid, acl)

    async def test_busy_vm_left_for_later(self):
        """A VM an operation holds is not re-exported under it; the next pass does it."""
        await self.models.vms.act("lab", "web", "start")
        disk = (await self.exported())[vm_disk_name(self.uuid)]
        self.world.server.reboot()
        vm = await self.models.vms.get("lab", "web")
        lock = self.models.locks.lock(self.uuid, "VM 'web'", "doing something")
        await lock.acquire()
        self.assertEqual(await self.models.reconciler.run(), [])
        self.assertEqual(self.world.server.targets, {})
        await lock.release()
        self.assertEqual(len(await self.models.reconciler.run()), 1)
        self.assertEqual([t.iqn for t in self.world.server.targets.values()], [disk.target])
        self.assertEqual(vm.record.uuid, self.uuid)

    async def test_unexported_volume_not_exported(self):
        """A stopped VM's disk (no export recorded) is not exported by a reboot's repair."""
        self.world.server.reboot()
        self.assertEqual(await self.models.reconciler.run(), [])
        self.assertEqual(self.world.server.targets, {})

    async def test_server_down(self):
        """A server that does not answer is left for later."""
        await self.models.vms.act("lab", "web", "start")
        self.world.server.reboot()
        runner = self.models.storage.server("s1").runner
        runner.unavailable = "booting"
        repairs, left = await self.models.reconciler.restore_exports("s1")
        self.assertEqual((repairs, left), ([], 1))
        runner.unavailable = None
        repairs, left = await self.models.reconciler.restore_exports("s1")
        self.assertEqual((len(repairs), left), (1, 0))


class IntentTests(CrashBase, TestCase):
    async def test_rows_while_running_none_after(self):
        """Steps are written before they run and the operation's rows go when it ends."""
        seen = []
        table = IntentTable(self.world.db)

        def watch(kind, step, when):
            seen.append((kind, step, when))
            return False

        self.models.intents.halt = watch
        await self.models.vms.act("lab", "web", "start")
        self.assertEqual([s for _, s, w in seen if w == "before"], steps(vm_start.OPERATION))
        self.assertEqual(await table.list(), [])

    async def test_failed_operation_leaves_no_rows(self):
        """An operation that fails and undoes itself leaves no intent rows."""
        self.assertEqual((await self.client.post("/storagepools/pool1/deactivate")).code, 200)
        answer = await self.client.post("/cluster/lab/vms/web/start")
        self.assertEqual(answer.code, 409, answer.body)
        self.assertEqual(await IntentTable(self.world.db).list(), [])

    async def test_task_id_recorded(self):
        """Steps run under a task name it."""
        task_id = await self.crash_volume_create("record", "before")
        rows = await IntentTable(self.world.db).list()
        self.assertEqual({r.task_id for r in rows}, {task_id})
        self.assertEqual([(r.step, r.state) for r in rows],
                         [("create zvol", "done"), ("record", "planned")])
        self.assertEqual(rows[0].detail, {"server": "s1", "zvol": "tank/comet/data"})


class DeadOwnerLockTests(CrashBase, TestCase):
    """Locks outlive their process in SQLite; the next one's reconciler releases them."""

    async def test_dead_owners_locks_released(self):
        """
        A daemon (with its lease) dies while creating a volume: a fresh
        process over the same database takes the lease, and its reconciler
        releases the dead owner's lock, logs it and fails the task.
        """
        import attrs
        from twisted.logger import capturedLogs, formatEvent

        from comet.store import Locks as LockTable
        from tests.model.test_locks import dead_pid

        locks = self.models.locks
        # This "process" is one whose pid is gone by now (it died below).
        locks.me = attrs.evolve(locks.me, pid=dead_pid())
        await locks.take_lease()
        task_id = await self.crash_volume_create("record", "before")
        table = LockTable(self.world.db)
        self.assertEqual([(r.object, r.task_id) for r in await table.list()],
                         [("pool1/data", task_id)])

        models = self.world.boot()
        await models.locks.take_lease()   # the dead owner does not keep it
        with capturedLogs() as events:
            await models.reconciler.run()
        said = [formatEvent(e) for e in events]
        self.assertTrue(any(
            f"the lock of pool1/data (being created, task {task_id}) held by owner"
            f" {locks.me.owner} (pid {locks.me.pid}" in text and "was released" in text
            for text in said), said)
        self.assertEqual(await table.list(), [])
        self.assertEqual([o.owner for o in await table.owners()], [models.locks.me.owner])
        self.assertEqual((await models.tasks.get(task_id)).status, "failed")
        await self.assertConsistent(models)
        # The volume is free again.
        client = make_client(self, models)
        answer = await client.post("/storagepools/pool1/storagevolumes",
                                   {"name": "data", "capacity": 1})
        self.assertEqual(answer.code, 202, answer.body)
        await models.tasks.wait(answer.json["id"])

    async def test_own_locks_kept(self):
        """The reconciler never releases a lock of its own process."""
        crash = Crash("vm.start", "define domain", "after")
        await self.crash_during(crash, lambda: self.models.vms.act("lab", "web", "start"))
        self.assertEqual(await self.models.reconciler.release_dead_locks(), [])
        self.assertEqual([r.object for r in await self.models.locks.rows()], [self.uuid])


class PeriodicTests(TestCase):
    def test_interval(self):
        """The reconciler runs every interval seconds; 0 runs it only at start."""
        clock = Clock()
        runs = []
        reconciler = Reconciler(None, None, None, None, clock)

        async def run():
            runs.append(clock.seconds())
            return []

        reconciler.run = run
        reconciler.start(ReconcileConfig().interval)
        clock.advance(59)
        self.assertEqual(runs, [])
        clock.advance(1)
        clock.advance(60)
        self.assertEqual(runs, [60, 120])
        reconciler.stop()
        clock.advance(600)
        self.assertEqual(runs, [60, 120])
        reconciler.start(0)
        clock.advance(600)
        self.assertEqual(runs, [60, 120])
