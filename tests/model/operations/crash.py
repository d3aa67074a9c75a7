"""
The crash tests' world (shared by tests/model/test_reconcile.py and
tests/model/operations): an operation stopped dead after any of its steps,
then a fresh daemon (new models over the same SQLite file, the same libvirt
hosts and storage servers) reconciles.  Afterwards no domain, zvol or target
lacks an owning record, no record points at nothing, no intent is left, and
the interrupted task is failed with what was repaired.

A "crash" is L{comet.model.intents.Intents.halt}: the operation freezes for
ever at the chosen point, with its intent rows as a dead process leaves them.
"""

from __future__ import annotations

import re

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import TestCase

from comet.config import Config, StoragePoolConfig, StorageServerConfig
from comet.model import make_models
from comet.model.storage import GiB
from comet.remote import FakeRunner, FakeStorageServer
from comet.store import Intents as IntentTable
from comet.virt import Hypervisors
from tests._api import make_client, temp_database
from tests._api import test_hosts as _test_hosts
from tests.model.storage._setup import _Secrets, make_base_template

#: The halted operations of every test, kept for the whole run: a collected
#: coroutine would run its cleanup code, which a dead process never does.
DEAD: list = []

#: Where a crash may stop a step: its row written but not run, or run but not marked.
WHEN = ("before", "after")


def steps(operation) -> list[str]:
    """The step names of an operation (L{comet.model.operations.OperationType}), in order."""
    return [step.value for step in operation.steps]


class Crash:
    """A halt hook: freeze at (kind, step, when); C{reached} fires there."""

    def __init__(self, kind: str, step: str, when: str):
        self.point = (kind, step, when)
        self.reached: Deferred = Deferred()

    def __call__(self, kind: str, step: str, when: str) -> bool:
        if (kind, step, when) == self.point and not self.reached.called:
            self.reached.callback(None)
            return True
        return False


class Daemon:
    """
    The world that outlives a Comet process (SQLite file, libvirt hosts,
    storage servers) and the processes started over it.
    """

    def __init__(self, testcase: TestCase):
        self.db = temp_database(testcase)
        self.config = Config(
            hosts=_test_hosts(testcase),
            storageservers=(StorageServerConfig(host="s1"),),
            storagepools=(StoragePoolConfig(name="pool1", server="s1", dataset="tank/comet"),),
        )
        real = Hypervisors(reactor, self.config.hosts, self.config.compute)
        real.startService()
        testcase.addCleanup(real.stopService)
        # CHAP secrets and hot-plugs live here (the test driver has neither).
        self.hv = _Secrets(real)
        self.server = FakeStorageServer(pools={"tank": 100 * GiB})

    def boot(self):
        """A new process's models (nothing of the previous process's memory)."""
        return make_models(self.db, self.hv, self.config, reactor,
                           runners={"s1": FakeRunner(self.server, host="s1")})

    async def restart(self):
        """A new process, started as the daemon starts: recover, reconcile."""
        models = self.boot()
        await models.tasks.recover()
        repairs = await models.reconciler.run()
        return models, repairs


class CrashBase:
    async def setUp(self):
        self.world = Daemon(self)
        self.models = self.world.boot()
        self.client = make_client(self, self.models)
        await make_base_template(self, self.client, self.models)
        answer = await self.client.post("/cluster/lab/vms", {"template": "deb", "name": "web"})
        self.assertEqual(answer.code, 201, answer.body)
        self.uuid = answer.json["uuid"]

    async def data_volume(self, models=None) -> None:
        """Volume pool1/data (1 GiB), made and its task waited for."""
        models = models or self.models
        await models.tasks.wait((await models.storage.create_volume(
            "pool1", "data", capacity_gb=1)).id)

    def plugged(self) -> list:
        """The devices hot-plugged as vdb (the data volume's) on the test hosts."""
        return [key for key in self.world.hv.plugged if key[2] == "vdb"]

    async def crash_during(self, crash: Crash, start) -> None:
        """Run C{start()} (the operation) until it freezes at C{crash}."""
        self.models.intents.halt = crash
        DEAD.append((self.models.intents.frozen, ensureDeferred(start())))
        await crash.reached

    async def crash_volume_create(self, step: str, when: str, url: str | None = None,
                                  format: str | None = None) -> int:
        """
        Create volume pool1/data (of 1 GiB, or from C{url}, of C{format} if
        given) until it freezes at C{step}; its task's id.
        """
        crash = Crash("volume.create", step, when)
        task = []

        async def create():
            if url is None:
                task.append(await self.models.storage.create_volume(
                    "pool1", "data", capacity_gb=1))
            else:
                task.append(await self.models.storage.create_volume("pool1", "data", url=url,
                                                                    format=format))

        await self.crash_during(crash, create)
        return task[0].id

    async def assertConsistent(self, models) -> None:
        """Nothing without an owning record, no record pointing at nothing."""
        records = {r.uuid: r for r in await models.context.vms.list(None)}
        hv = self.world.hv
        for host in hv.hosts:
            domains = await hv.list_domains(host)
            for name in domains:
                uuid = name[len("comet-"):]
                self.assertIn(uuid, records, f"domain {name} on {host} has no VM")
                self.assertEqual(records[uuid].host, host, f"domain {name} on the wrong host")
            for record in records.values():
                if record.host == host:
                    self.assertIn(record.domain_name, domains,
                                  f"VM {record.name} placed on {host} without a domain")
        server = self.world.server
        volumes = {r.zvol: r for r in await models.storage.records.volumes("pool1")}
        zvols = {n for n, d in server.datasets.items() if d.type == "volume"}
        # The data a revert set aside (<zvol>-old-<hex>) belongs to its volume.
        set_aside = "(?:" + "|".join(re.escape(v) for v in volumes) + r")-old-[0-9a-f]+"
        zvols = {n for n in zvols if not (volumes and re.fullmatch(set_aside, n))}
        self.assertEqual(zvols, set(volumes), "zvols and volume records differ")
        targets = {t.iqn for t in server.targets.values()}
        self.assertEqual(targets, {r.target for r in volumes.values() if r.target},
                         "targets and recorded exports differ")
        for record in volumes.values():
            if record.target:
                vm = records.get(record.vm_uuid)
                self.assertIsNotNone(vm, f"{record.zvol} exported for no VM")
                self.assertEqual(record.exported_to, vm.host)
        self.assertEqual(await IntentTable(self.world.db).list(), [])
        self.assertEqual(await models.tasks.list("running"), [])

    async def assertTaskRepaired(self, models, task_id: int) -> None:
        task = await models.tasks.get(task_id)
        self.assertEqual(task.status, "failed")
        self.assertIn("stopped while this task was running; repaired:", task.message)

    async def phase(self, models) -> str:
        return (await models.vms.get("lab", "web")).phase
