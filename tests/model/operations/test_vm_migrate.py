"""
VM migrate (L{comet.model.operations.vm_migrate}): cut short after any of
its steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}); and the repair's reading of both hosts
when libvirt left the domain on both (a migration interrupted inside
libvirt's own phases, which the test driver cannot stop in).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import vm_migrate
from comet.model.operations.vm_migrate import Step
from tests.model.operations.crash import WHEN, Crash, CrashBase, steps

#: The initiator address each test host's exports admit (tests._api.test_hosts).
ADDRESS = {"node1": "192.0.2.1", "node2": "192.0.2.2"}
OTHER = {"node1": "node2", "node2": "node1"}

#: The (step, when) after which the VM runs on the destination.
MOVED = {(Step.MIGRATE.value, "after")} | {
    (s.value, w) for s in (Step.MOVE_PLACEMENT, Step.WITHDRAW_FROM_SOURCE) for w in WHEN}


class MigrateCrashBase(CrashBase):
    async def running(self, state: str = "running"):
        """The VM started (and paused, for C{state} C{paused}); its host."""
        vm = await self.models.vms.act("lab", "web", "start")
        if state == "paused":
            vm = await self.models.vms.act("lab", "web", "suspend")
        self.assertEqual(vm.phase, state)
        return vm.record.host

    async def crash_migrate(self, step: str, when: str) -> int:
        """Migrate the VM (placement picks the other host) until it freezes; its task's id."""
        task = []

        async def migrate():
            task.append(await self.models.vms.migrate("lab", "web"))

        await self.crash_during(Crash("vm.migrate", step, when), migrate)
        return task[0].id

    async def assertExportedOnlyTo(self, models, host: str) -> None:
        """The VM's disks: exported to C{host} alone (tgt ACL, CHAP secrets, records)."""
        volumes = [v for v in await models.storage.records.volumes("pool1")
                   if v.vm_uuid == self.uuid]
        self.assertTrue(volumes)
        targets = {t.iqn: t for t in self.world.server.targets.values()}
        for volume in volumes:
            self.assertEqual(volume.exported_to, host)
            self.assertEqual(list(targets[volume.target].acl), [ADDRESS[host]], volume.name)
            self.assertEqual({h for (h, uuid) in self.world.hv.secrets
                              if uuid == volume.secret_uuid}, {host}, volume.name)


class VMMigrateCrashTests(MigrateCrashBase, TestCase):
    """A migration cut short after any step runs on exactly one host, which its record names."""

    async def check(self, step: str, when: str, state: str) -> None:
        source = await self.running(state)
        dest = OTHER[source]
        task_id = await self.crash_migrate(step, when)
        models, repairs = await self.world.restart()
        self.assertEqual(len([r for r in repairs if "interrupted vm.migrate" in r]), 1, repairs)
        await self.assertConsistent(models)
        await self.assertTaskRepaired(models, task_id)
        expected = dest if (step, when) in MOVED else source
        vm = await models.vms.get("lab", "web")
        self.assertEqual((vm.record.host, vm.phase), (expected, state), (step, when))
        for host in (source, dest):
            domains = await self.world.hv.domain_states(host)
            self.assertEqual(vm.record.domain_name in domains, host == expected, host)
        await self.assertExportedOnlyTo(models, expected)
        # The repaired VM migrates normally in the new process.
        task = await models.vms.migrate("lab", "web")
        await models.tasks.wait(task.id)
        self.assertEqual((await models.tasks.get(task.id)).status, "finished")
        vm = await models.vms.get("lab", "web")
        self.assertEqual((vm.record.host, vm.phase), (OTHER[expected], state))
        await self.assertExportedOnlyTo(models, OTHER[expected])
        await self.assertConsistent(models)

    async def test_each_step(self):
        """Crashing before and after each step of a migration leaves a consistent system."""
        for step in steps(vm_migrate.OPERATION):
            for when in WHEN:
                await self.setUp()
                await self.check(step, when, "running")

    async def test_paused(self):
        """A paused VM cut short while it migrates is paused where it ends up."""
        for step, when in [(Step.MIGRATE.value, "before"), (Step.MIGRATE.value, "after")]:
            await self.setUp()
            await self.check(step, when, "paused")


class SettleTests(MigrateCrashBase, TestCase):
    """
    The repair reads both hosts: the domains an interrupted libvirt migration
    leaves are set up by hand on the test-driver hosts before the restart.
    """

    async def interrupted(self, at_source: str | None, at_dest: str | None):
        """
        A migration killed in its migrate step (before libvirt was called),
        then the hosts made to hold the domain as C{at_source} and
        C{at_dest} (C{None}: not defined); the repairs and the new models.
        """
        source = await self.running()
        dest = OTHER[source]
        await self.crash_migrate(Step.MIGRATE.value, "before")
        hv = self.world.hv
        domain = f"comet-{self.uuid}"
        spec = (await hv.describe(source, domain, True)).spec
        if at_dest is not None:
            await hv.define(dest, spec)
            if at_dest != "shutoff":
                await hv.start(dest, domain)
            if at_dest == "paused":
                await hv.suspend(dest, domain)
        if at_source is None:
            await hv.destroy(source, domain)
            await hv.undefine(source, domain)
        elif at_source == "paused":
            await hv.suspend(source, domain)
        models, repairs = await self.world.restart()
        return source, dest, models, repairs

    async def outcome(self, models):
        vm = await models.vms.get("lab", "web")
        return vm.record.host, vm.phase

    async def test_finished_not_confirmed(self):
        """
        Running on the destination, paused on the source (libvirt finished
        the destination, the source was not told): the destination won; the
        source's domain is removed.
        """
        source, dest, models, repairs = await self.interrupted("paused", "running")
        self.assertEqual(await self.outcome(models), (dest, "running"))
        self.assertIn("had completed", " ".join(repairs))
        self.assertNotIn(f"comet-{self.uuid}", await self.world.hv.domain_states(source))
        await self.assertExportedOnlyTo(models, dest)
        await self.assertConsistent(models)

    async def test_incoming_not_finished(self):
        """
        Running on the source, paused on the destination (an incoming
        migration libvirt had not finished): the source won; the
        destination's domain is removed.
        """
        source, dest, models, repairs = await self.interrupted("running", "paused")
        self.assertEqual(await self.outcome(models), (source, "running"))
        self.assertIn("did not happen", " ".join(repairs))
        self.assertNotIn(f"comet-{self.uuid}", await self.world.hv.domain_states(dest))
        await self.assertExportedOnlyTo(models, source)
        await self.assertConsistent(models)

    async def test_source_left_paused(self):
        """
        Paused on the source and gone from the destination (libvirt copied
        the memory, then the destination was destroyed with its client): the
        guest stays on the source and runs again there, as it did before.
        """
        source, dest, models, repairs = await self.interrupted("paused", None)
        self.assertEqual(await self.outcome(models), (source, "running"))
        self.assertIn("resumed", " ".join(repairs))
        await self.assertExportedOnlyTo(models, source)
        await self.assertConsistent(models)

    async def test_only_destination(self):
        """Gone from the source, running on the destination: the migration had completed."""
        source, dest, models, repairs = await self.interrupted(None, "running")
        self.assertEqual(await self.outcome(models), (dest, "running"))
        await self.assertExportedOnlyTo(models, dest)
        await self.assertConsistent(models)

    async def test_unsettled_waits(self):
        """
        Paused on both (libvirt still settling): the repair waits for a later
        pass, and meanwhile the reconciler removes neither host's domain.
        """
        source, dest, models, repairs = await self.interrupted("paused", "paused")
        self.assertEqual([r for r in repairs if "vm.migrate" in r], [])
        domain = f"comet-{self.uuid}"
        for host in (source, dest):
            self.assertIn(domain, await self.world.hv.domain_states(host), host)
        # libvirt settles: the source goes on; the next pass repairs.
        await self.world.hv.resume(source, domain)
        repairs = await models.reconciler.run()
        self.assertIn("did not happen", " ".join(repairs))
        self.assertEqual(await self.outcome(models), (source, "running"))
        await self.assertExportedOnlyTo(models, source)
        await self.assertConsistent(models)


class LeftForRepairTests(MigrateCrashBase, TestCase):
    """A migration that cannot finish its own records leaves them to the reconciler."""

    async def test_withdraw_fails(self):
        """
        The source's secret cannot be removed (its host stops answering right
        after the move): the task says the VM moved and the reconciler
        finishes; until it has, no other operation starts on the VM and the
        leftovers pass leaves its domains alone; then its disks are exported
        only where it runs.
        """
        from comet.errors import Unavailable

        source = await self.running()
        dest = OTHER[source]
        hv = self.world.hv
        undefine = hv.undefine_secret

        async def silent(host, uuid):
            if host == source:
                raise Unavailable(f"compute host {host!r} does not answer")
            return await undefine(host, uuid)

        self.patch(hv, "undefine_secret", silent)
        task = await self.models.vms.migrate("lab", "web")
        await self.models.tasks.wait(task.id)
        task = await self.models.tasks.get(task.id)
        self.assertEqual(task.status, "finished", task.message)
        self.assertIn("the reconciler finishes it", task.message)
        vm = await self.models.vms.get("lab", "web")
        self.assertEqual((vm.record.host, vm.phase), (dest, "running"))
        with self.assertRaises(Exception) as refused:
            await self.models.vms.act("lab", "web", "suspend")
        self.assertIn("interrupted vm.migrate", str(refused.exception))
        repairs = await self.models.reconciler.run()   # the host still silent: left
        self.assertEqual([r for r in repairs if "vm.migrate" in r], [])
        self.assertIn(f"comet-{self.uuid}", await hv.domain_states(dest))
        self.patch(hv, "undefine_secret", undefine)
        repairs = await self.models.reconciler.run()
        self.assertIn("had completed", " ".join(repairs))
        await self.assertExportedOnlyTo(self.models, dest)
        await self.assertConsistent(self.models)
        vm = await self.models.vms.act("lab", "web", "suspend")
        self.assertEqual(vm.phase, "paused")

    async def test_finished_task_stays_finished(self):
        """
        The reconciler finishing a migration whose task already finished
        (it said the VM moved and left the records to the reconciler) does
        not rewrite that task as failed: it stays finished, and its message
        gains what the reconciler did.
        """
        from comet.errors import Unavailable

        source = await self.running()
        hv = self.world.hv
        undefine = hv.undefine_secret

        async def silent(host, uuid):
            if host == source:
                raise Unavailable(f"compute host {host!r} does not answer")
            return await undefine(host, uuid)

        self.patch(hv, "undefine_secret", silent)
        task = await self.models.vms.migrate("lab", "web")
        await self.models.tasks.wait(task.id)
        before = await self.models.tasks.get(task.id)
        self.assertEqual(before.status, "finished", before.message)
        self.patch(hv, "undefine_secret", undefine)
        repairs = await self.models.reconciler.run()
        self.assertIn("had completed", " ".join(repairs))
        after = await self.models.tasks.get(task.id)
        self.assertEqual((after.status, after.progress), ("finished", 100), after.message)
        self.assertTrue(after.message.startswith(before.message), after.message)
        self.assertIn("had completed", after.message)
