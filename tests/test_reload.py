"""
Reloading the configuration (L{comet.reload}): in a service in this process,
and in a real C{twistd} daemon sent C{SIGHUP}.
"""

import os
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from comet import config
from comet.admin import bootstrap
from comet.service import makeService
from comet.store import Clusters, Templates
from tests._process import spawn
from tests._util import bearer, http, temp_dir
from tests.test_service import TWISTD, _twistd_env, free_port

LOCAL = '[[hosts]]\nname = "local"\nuri = "test:///default"\ndomain_type = "test"\n'
SPARE = '[[hosts]]\nname = "spare"\nuri = "test:///default"\ndomain_type = "test"\n'
# A storage server on a loopback port nothing listens on: never watched
# (watch_interval = 0), it only has to be configured.
SERVER = '[[storageservers]]\nhost = "127.0.0.1"\nssh_port = 1\n'
POOL = '[[storagepools]]\nname = "tank"\nserver = "127.0.0.1"\ndataset = "tank/comet"\n'
QUIET = '[storage]\nwatch_interval = 0\n'


def write(directory: str, port: int, *parts: str) -> str:
    path = os.path.join(directory, "comet.toml")
    with open(path, "w") as f:
        f.write(f'[api]\nendpoint = "tcp:{port}:interface=127.0.0.1"\n'
                f'[database]\npath = "{directory}/comet.sqlite"\n' + "".join(parts))
    return path


def log_lines(testcase) -> list[str]:
    """Every log line from now to the test's end, formatted."""
    lines: list[str] = []

    def observe(event):
        lines.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    testcase.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


class ReloadTests(TestCase):
    """L{CometService.reload} on a service in this process, over its real API."""

    async def start(self, *parts: str):
        self.directory = temp_dir(self)
        self.port = free_port()
        self.token = bootstrap(os.path.join(self.directory, "comet.sqlite"))
        self.service = makeService(config.load(write(self.directory, self.port, *parts)))
        self.service.startService()
        self.addCleanup(self.service.stopService)
        await self.service.ready

    async def get(self, path: str):
        response = await http().get(f"http://127.0.0.1:{self.port}{path}",
                                    headers=bearer(self.token))
        self.assertEqual(response.code, 200)
        return await response.json()

    async def hosts(self) -> dict[str, str]:
        return {h["name"]: h["state"] for h in await self.get("/hosts")}

    async def test_host_added_and_removed(self):
        """A host added to the file is connected and listed; removed, it is gone."""
        await self.start(LOCAL)
        self.assertEqual(await self.hosts(), {"local": "connected"})
        write(self.directory, self.port, LOCAL, SPARE)
        outcome = await self.service.reload()
        self.assertEqual((outcome.hosts_added, outcome.refused), (("spare",), ()))
        self.assertEqual(await self.hosts(), {"local": "connected", "spare": "connected"})
        self.assertEqual([h.name for h in self.service.config.hosts], ["local", "spare"])
        write(self.directory, self.port, LOCAL)
        outcome = await self.service.reload()
        self.assertEqual((outcome.hosts_removed, outcome.refused), (("spare",), ()))
        self.assertEqual(await self.hosts(), {"local": "connected"})
        self.assertEqual(self.service.hypervisors.hosts, ("local",))

    async def test_host_with_tunnel_not_added(self):
        """A host that would carry private networks is refused: the others' tunnels list peers."""
        await self.start(LOCAL)
        write(self.directory, self.port, LOCAL,
              SPARE + 'tunnel_address = "192.0.2.9"\nssh = "root@192.0.2.9"\n')
        outcome = await self.service.reload()
        self.assertEqual(outcome.hosts_added, ())
        self.assertIn("needs a restart", outcome.refused[0])
        self.assertEqual(await self.hosts(), {"local": "connected"})

    async def test_restart_keys_refused(self):
        """
        A changed listen address, database path or network is refused with a
        log line and the running value kept (the network's was dropped unsaid); the hosts' change in the same file is applied.
        """
        await self.start(LOCAL)
        lines = log_lines(self)
        other = free_port()
        path = os.path.join(self.directory, "comet.toml")
        with open(path, "w") as f:
            f.write(f'[api]\nendpoint = "tcp:{other}:interface=127.0.0.1"\n'
                    f'[database]\npath = "{self.directory}/other.sqlite"\n'
                    '[network]\nmtu = 1400\n' + LOCAL + SPARE)
        outcome = await self.service.reload()
        self.assertEqual(outcome.hosts_added, ("spare",))
        self.assertEqual(len(outcome.refused), 3, outcome.refused)
        self.assertTrue(any("[network] changed" in line for line in lines), lines)
        self.assertEqual(self.service.config.network.mtu, 1450)
        self.assertTrue(any("[api] changed" in line and "restart" in line for line in lines),
                        lines)
        self.assertTrue(any("[database] changed" in line for line in lines), lines)
        self.assertEqual(await self.hosts(), {"local": "connected", "spare": "connected"})
        self.assertEqual(self.service.config.api.endpoint,
                         f"tcp:{self.port}:interface=127.0.0.1")
        self.assertFalse(os.path.exists(os.path.join(self.directory, "other.sqlite")))

    async def test_host_with_vms_kept(self):
        """A host that VMs are placed on is not removed; the reload says why."""
        await self.start(LOCAL, SPARE)
        await Clusters(self.service.db).create("lab", "", 1)
        await Templates(self.service.db).create("small", 256, 1, None, None, 1)
        vms = self.service.models.context.vms
        await vms.create("lab", "web", "small", None, None, "u-1", 2)
        await vms.set_host("u-1", "spare")
        write(self.directory, self.port, LOCAL)
        outcome = await self.service.reload()
        self.assertEqual(outcome.hosts_removed, ())
        self.assertIn("VMs are placed on it", outcome.refused[0])
        self.assertIn("spare", await self.hosts())
        self.assertEqual([h.name for h in self.service.config.hosts], ["local", "spare"])

    async def test_host_cpu_mode_applied(self):
        """
        A host's cpu_mode changes at once: the VMs started from then on get
        the new CPU; a change of other settings with it is refused whole.
        """
        await self.start(LOCAL)
        await Clusters(self.service.db).create("lab", "", 1)
        await Templates(self.service.db).create("small", 256, 1, None, None, 1)
        vms = self.service.models.vms
        self.addCleanup(lambda: vms.delete("lab", "small-1", force=True))
        await vms.create("lab", "small")
        write(self.directory, self.port, LOCAL + 'cpu_mode = "Nehalem"\n')
        outcome = await self.service.reload()
        self.assertEqual((outcome.refused, outcome.applied),
                         ((), ("compute host 'local': cpu_mode = 'Nehalem'",)))
        self.assertEqual(self.service.config.hosts[0].cpu_mode, "Nehalem")
        vm = await vms.act("lab", "small-1", "start")
        description = await self.service.hypervisors.describe("local", vm.record.domain_name)
        self.assertEqual(description.spec.cpu, "Nehalem")
        write(self.directory, self.port,
              LOCAL.replace("test:///default", "test:///default?x") + 'cpu_mode = "Westmere"\n')
        outcome = await self.service.reload()
        self.assertIn("its settings changed", outcome.refused[0])
        self.assertEqual(outcome.applied, ())
        self.assertEqual(self.service.config.hosts[0].cpu_mode, "Nehalem")
        self.assertEqual(self.service.models.hosts.config("local").cpu_mode, "Nehalem")

    async def test_broken_file_changes_nothing(self):
        """A file that does not parse is refused whole, with a log line; the old state is served."""
        await self.start(LOCAL)
        lines = log_lines(self)
        with open(os.path.join(self.directory, "comet.toml"), "a") as f:
            f.write(SPARE + "[api\n")
        self.assertIsNone(await self.service.reload())
        self.assertTrue(any("reload refused, nothing changed" in line and "not valid TOML"
                            in line for line in lines), lines)
        self.assertEqual(await self.hosts(), {"local": "connected"})

    async def test_storage_server_added_and_removed(self):
        """A storage server is added and removed; one a pool is on is kept."""
        await self.start(LOCAL, QUIET)
        self.assertEqual(await self.get("/storageservers"), [])
        write(self.directory, self.port, LOCAL, QUIET, SERVER)
        outcome = await self.service.reload()
        self.assertEqual((outcome.servers_added, outcome.refused), (("127.0.0.1",), ()))
        self.assertEqual([s["host"] for s in await self.get("/storageservers")],
                         ["127.0.0.1"])
        self.assertTrue(self.service.config.storage.control_dir)
        write(self.directory, self.port, LOCAL, QUIET)
        outcome = await self.service.reload()
        self.assertEqual((outcome.servers_removed, outcome.refused), (("127.0.0.1",), ()))
        self.assertEqual(await self.get("/storageservers"), [])

    async def test_storage_server_with_pool_kept(self):
        """A server a configured pool is on stays, and so does the pool (a restart change)."""
        await self.start(LOCAL, QUIET, SERVER, POOL)
        write(self.directory, self.port, LOCAL, QUIET)
        outcome = await self.service.reload()
        self.assertEqual(outcome.servers_removed, ())
        self.assertTrue(any("[storagepools] changed" in r for r in outcome.refused),
                        outcome.refused)
        self.assertTrue(any("a storage pool is on it" in r for r in outcome.refused),
                        outcome.refused)
        self.assertEqual([s["host"] for s in await self.get("/storageservers")],
                         ["127.0.0.1"])


class SighupTests(TestCase):
    """A real C{twistd} daemon rereads its file on C{SIGHUP}."""

    async def until(self, check, what: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await check():
                return
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"{what}: not in {timeout} s; log:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.logfile) as f:
                return f.read()
        except OSError:
            return ""

    async def test_sighup(self):
        directory = temp_dir(self)
        port = free_port()
        path = write(directory, port, LOCAL)
        token = bootstrap(os.path.join(directory, "comet.sqlite"))
        self.logfile = os.path.join(directory, "comet.log")
        process, done = spawn(
            TWISTD + ["-n", "--pidfile=", "--logfile", self.logfile, "comet", "--config", path],
            env=_twistd_env(), path=directory)
        self.addCleanup(lambda: done.called or process.signalProcess("KILL"))

        async def hosts():
            try:
                response = await http().get(f"http://127.0.0.1:{port}/hosts",
                                            headers=bearer(token))
            except Exception:
                return None
            return {h["name"]: h["state"] for h in await response.json()}

        async def serving():
            return await hosts() is not None
        await self.until(serving, "listening")
        write(directory, port, LOCAL, SPARE)
        process.signalProcess("HUP")

        async def both():
            return await hosts() == {"local": "connected", "spare": "connected"}
        await self.until(both, "spare added")
        with open(path, "a") as f:
            f.write("[[hosts]\n")
        process.signalProcess("HUP")

        async def refused():
            return "reload refused, nothing changed" in self.log()
        await self.until(refused, "broken file refused")
        self.assertTrue(await both())
        write(directory, port, LOCAL)
        process.signalProcess("HUP")

        async def one():
            return await hosts() == {"local": "connected"}
        await self.until(one, "spare removed")
        process.signalProcess("TERM")
        outcome = await done
        self.assertIn(outcome.code, (None, 0))
        self.assertIn("Comet stopped", self.log())
