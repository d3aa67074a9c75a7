"""
The C{actions} of every resource list exactly what is valid now (the
contract): in each state a resource can be in, every action it lists
succeeds, and every action of its kind it does not list is a 409.
"""

from __future__ import annotations

import itertools

import attrs
from twisted.trial.unittest import TestCase

from comet.model.storage import VMStorage, snapshot_actions, unmap_refusal
from comet.model.vm_phases import VM_ACTIONS
from tests.model.storage._setup import _Setup

#: The body each action is sent with (stop: do not wait a minute for the test driver).
BODIES = {"stop": {"timeout": 0.2, "force": True}}

#: VM phase -> the quick actions that bring a new (stopped) VM into it.
PHASES = {
    "stopped": [],
    "shutoff": ["start", "poweroff"],
    "running": ["start"],
    "paused": ["start", "suspend"],
}


class ActionsTests(_Setup, TestCase):
    """VMs, their storages and snapshots, clusters and pools, in each of their states."""

    _names = itertools.count(1)

    async def post_ok(self, path, body=None):
        answer = await self.client.post(path, body)
        self.assertIn(answer.code, (200, 201, 202), f"{path}: {answer.body!r}")
        if answer.code == 202:
            await self.models.tasks.wait(answer.json["id"])
        return answer

    async def vm_in(self, phase: str) -> str:
        """A new VM of cluster lab (with a data volume and a snapshot) in C{phase}; its href."""
        name = f"vm{next(self._names)}"
        await self.make_vm(name)
        await self.post_ok(f"/cluster/lab/vms/{name}/snapshots", {"name": "s"})
        for action in PHASES[phase]:
            await self.post_ok(f"/cluster/lab/vms/{name}/{action}")
        # Attached last: libvirt's test driver has no hot-plug, so a volume
        # in the domain's definition would never be let go (see _Secrets).
        await self.post_ok("/storagepools/pool1/storagevolumes", {"name": f"d-{name}", "capacity": 1})
        await self.post_ok(f"/cluster/lab/vms/{name}/storages", {"pool": "pool1", "vol": f"d-{name}"})
        vm = (await self.client.get(f"/cluster/lab/vms/{name}")).json
        self.assertEqual(vm["state"], "shutoff" if phase == "stopped" else phase)
        self.assertEqual(vm["host"] is None, phase == "stopped")
        return vm["href"]

    async def check(self, enter, kind_actions, what):
        """
        For each action of C{kind_actions}: C{enter()} makes a resource in the
        state (its href); the action succeeds if listed, is a 409 if not.
        Answers the actions listed.
        """
        listed = None
        for action in kind_actions:
            href = await enter()
            resource = (await self.client.get(href)).json
            if listed is None:
                listed = set(resource["actions"])
            self.assertEqual(set(resource["actions"]), listed, what)
            self.assertLessEqual(listed, set(kind_actions), what)
            answer = await self.client.post(f"{href}/{action}", BODIES.get(action))
            if action in listed:
                self.assertEqual(resource["actions"][action], f"{href}/{action}")
                self.assertIn(answer.code, (200, 202), f"{what}: listed {action}: {answer.body!r}")
                if answer.code == 202:
                    await self.models.tasks.wait(answer.json["id"])
                    task = (await self.client.get(answer.header("location"))).json
                    self.assertEqual(task["status"], "finished", f"{what}: {action}: {task}")
            else:
                self.assertEqual(answer.code, 409, f"{what}: unlisted {action}: {answer.body!r}")
        return listed

    async def test_vms(self):
        expected = {
            "stopped": {"start"},
            "shutoff": {"start", "stop"},
            "running": {"poweroff", "shutdown", "reset", "suspend", "stop", "migrate"},
            "paused": {"poweroff", "resume", "stop", "migrate"},
        }
        for phase in PHASES:
            listed = await self.check(lambda: self.vm_in(phase), list(VM_ACTIONS), f"VM {phase}")
            self.assertEqual(listed, expected[phase], phase)

    async def test_vm_storages(self):
        """
        unmap is valid in every phase the API can reach here: a volume of a
        stopped VM is detached in the records alone, one of a placed VM from
        its domain too (hot-unplugged while it runs).
        """
        for phase in PHASES:

            async def enter():
                vm = await self.vm_in(phase)
                return f"{vm}/storages/d-{vm.rsplit('/', 1)[1]}"

            self.assertEqual(await self.check(enter, ["unmap"], f"storage, VM {phase}"), {"unmap"})

    async def test_snapshots(self):
        """revert only while the VM is off (placed nowhere or shut off); a 409 otherwise."""
        for phase in PHASES:

            async def enter():
                return f"{await self.vm_in(phase)}/snapshots/s"

            listed = await self.check(enter, ["revert"], f"snapshot, VM {phase}")
            self.assertEqual(listed, {"revert"} if phase in ("stopped", "shutoff") else set(), phase)

    async def test_unknown_phase(self):
        """A VM whose host does not answer lists neither unmap nor revert: both are refused."""
        name = (await self.vm_in("running")).rsplit("/", 1)[1]
        vm = attrs.evolve(await self.models.vms.get("lab", name), phase="unknown")
        [storage, _] = sorted(await self.models.vm_storages.list("lab", name),
                              key=lambda s: s.record.dev, reverse=True)
        self.assertEqual(storage.record.dev, "vdb")
        self.assertEqual(VMStorage(vm, storage.record).actions, [])
        self.assertIn("does not answer", unmap_refusal(vm))
        self.assertEqual(snapshot_actions(vm), [])

    async def test_clusters(self):
        """empty: nothing; stopped: start and stop; running: stop; partial: both."""
        clusters = itertools.count(1)

        def cluster_with(*phases):
            async def enter():
                name = f"c{next(clusters)}"
                await self.post_ok("/cluster", {"name": name})
                for i, phase in enumerate(phases):
                    vm = f"{name}-{i}"
                    await self.post_ok(f"/cluster/{name}/vms", {"template": "deb", "name": vm})
                    for action in PHASES[phase]:
                        await self.post_ok(f"/cluster/{name}/vms/{vm}/{action}")
                return f"/cluster/{name}"

            return enter

        cases = [
            ((), set()),
            (("stopped",), {"start", "stop"}),
            (("running",), {"stop"}),
            (("running", "stopped"), {"start", "stop"}),
        ]
        for phases, expected in cases:
            listed = await self.check(cluster_with(*phases), ["start", "stop"], f"cluster {phases}")
            self.assertEqual(listed, expected, phases)

    async def test_pools(self):
        pools = itertools.count(1)

        def pool(active):
            async def enter():
                name = f"p{next(pools)}"
                await self.post_ok("/storagepools",
                                   {"name": name, "server": "s2", "dataset": f"tank/{name}"})
                if not active:
                    await self.post_ok(f"/storagepools/{name}/deactivate")
                return f"/storagepools/{name}"

            return enter

        self.assertEqual(await self.check(pool(True), ["activate", "deactivate"], "active pool"),
                         {"deactivate"})
        self.assertEqual(await self.check(pool(False), ["activate", "deactivate"], "inactive pool"),
                         {"activate"})
