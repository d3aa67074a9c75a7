"""
A real Comet daemon for integration tests: a C{twistd -n comet} child process
configured for the testbed (its compute host, storage servers and pools, an
API on a free loopback port, a database of its own), and small helpers that
talk to its HTTP API the way a client does (treq, JSON, tasks polled).

Shared by the end-to-end tests (C{test_compute}, C{test_storage_e2e}).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import tempfile
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests._process import spawn
from tests._util import bearer, http, temp_dir
from tests.integration._testbed import removeDomainsEverywhere, requireTestbed
from tests.test_service import TWISTD, _twistd_env, free_port


def _toml(value) -> str:
    return json.dumps(value)   # a TOML basic string or number is JSON-compatible


def comet_config(stack: dict, directory: str, port: int, control_dir: str,
                 extra: dict | None = None, hosts: list[dict] | None = None,
                 networks: bool = False) -> str:
    """
    A Comet config for the testbed written from C{stack.json}: its host, servers and
    pools, but an API on C{port} and a database in C{directory}.  C{hosts}
    (C{name}, C{uri}, C{domain_type} each) replaces the testbed's compute host;
    one with a C{local_dataset} (C{stack.json}'s C{local_hosts}) gets it and its
    C{ssh}, the testbed's key.
    With C{networks}, each host that has a C{tunnel_address} in C{stack.json}
    carries clusters' private networks (its C{ssh}, the testbed's key), and
    the host that holds the testbed's bridge offers it as network C{public}.
    """
    ssh = stack["ssh"]
    lines = [
        "[api]",
        f"endpoint = {_toml(f'tcp:{port}:interface=127.0.0.1')}",
        "[database]",
        f"path = {_toml(os.path.join(directory, 'comet.sqlite'))}",
        "[storage]",
    ]
    # The tests serve their images on loopback, which downloads may not reach
    # by default (README: [storage] download_allow).
    if "download_allow" not in (extra or {}).get("storage", {}):
        lines.append('download_allow = ["127.0.0.0/8"]')
    # extra: {"storage": {"command_timeout": 10}, "compute": {...}}: keys of one-table sections
    storage = {"control_dir": control_dir, "connect_timeout": 10, **(extra or {}).get("storage", {})}
    for key, value in storage.items():
        lines.append(f"{key} = {_toml(value)}")
    for section, values in (extra or {}).items():
        if section != "storage":
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    if hosts is None:
        hosts = [{"name": "local", "uri": stack["host_uri"], "domain_type": stack["domain_type"]}]
    for host in hosts:
        lines += ["[[hosts]]"] + [f"{key} = {_toml(host[key])}" for key in ("name", "uri", "domain_type")]
        if networks and host.get("address") == stack["bridge"]["address"]:
            # The host holding the testbed's bridge offers it as the site's
            # public network (host2, in namespaces of its own, does not).
            lines.append(f"bridges = {{ public = {_toml(stack['bridge']['name'])} }}")
        over_ssh = host.get("local_dataset") or (networks and host.get("tunnel_address"))
        if networks and host.get("tunnel_address"):
            lines.append(f"tunnel_address = {_toml(host['tunnel_address'])}")
        if host.get("local_dataset"):
            # (a host of stack.json's local_hosts: local-copy mode, issue 21)
            lines.append(f"local_dataset = {_toml(host['local_dataset'])}")
            if host.get("local_keep"):
                lines.append("local_keep = true")
        if over_ssh:
            lines += [f"ssh = {_toml(host['ssh'])}",
                      f"ssh_identity = {_toml(ssh['identity'])}",
                      f"ssh_known_hosts = {_toml(ssh['known_hosts'])}"]
    for server in stack["servers"]:
        lines += [
            "[[storageservers]]",
            f"host = {_toml(server['address'])}",
            f"ssh_user = {_toml(ssh['user'])}",
            f"ssh_port = {int(server.get('ssh_port', ssh['port']))}",
            f"ssh_identity = {_toml(ssh['identity'])}",
            f"ssh_known_hosts = {_toml(ssh['known_hosts'])}",
        ]
    for server in stack["servers"]:
        lines += [
            "[[storagepools]]",
            f"name = {_toml(server['storagepool'])}",
            f"server = {_toml(server['address'])}",
            f"dataset = {_toml(server['dataset'])}",
        ]
    path = os.path.join(directory, "comet.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


async def first_admin_token(config: str) -> str:
    """
    The token of the first admin, made as C{comet-admin --config C{config}
    bootstrap} makes it on a fresh install (L{comet.admin.run}, what its
    command line runs), in a thread of this process: a child Python of its
    own imported Comet again first, 8 to 11 s on the loaded 2-CPU machine,
    for every daemon a test started.
    """
    from comet import admin

    out = io.StringIO()
    await deferToThread(admin.run, ["--config", config, "bootstrap"], io.StringIO(), out)
    return out.getvalue().splitlines()[2]


class _Answer:
    def __init__(self, code: int, headers, body: bytes):
        self.code = code
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    def __repr__(self):
        return f"<{self.code} {self.body[:600]!r}>"


def _sleep(seconds: float):
    return deferLater(reactor, seconds, lambda: None)


#: Seconds between two looks at a task or a VM being waited for: a GET on a
#: loopback daemon costs milliseconds, and a wait of 1 s lost half a second on
#: average per task.
POLL = 0.25


class CometDaemonCase(TestCase):
    """
    Starts the daemon in C{setUp} (skipped when the testbed is down) and stops
    it at the end; C{self.stack} is C{stack.json}, C{self.token} a random
    token for names.
    """


    #: More configuration: C{{section: {key: value}}} (e.g. shorter timeouts).
    config_extra: dict = {}
    #: Configure every compute host of the testbed (C{local} and C{host2}),
    #: not only C{local}: VMs then go where the placement rule puts them.
    all_hosts: bool = False
    #: Whether the hosts carry clusters' private networks (L{comet_config}).
    networks: bool = False
    #: L{pick_pool} tries the storage servers last to first: the second
    #: integration stream's classes (tests/conftest.py C{SECOND_STREAM}) do,
    #: so that the two streams' volumes are on different servers (each a
    #: one-CPU TCG VM, the slowest part of the testbed), not both on the first.
    pools_from_last: bool = False

    async def setUp(self):
        self.stack = requireTestbed()
        self.token = secrets.token_hex(3)
        directory = temp_dir(self)
        # ssh ControlMaster socket paths must be short: a directory of our own in /tmp.
        control = tempfile.mkdtemp(prefix="cc-", dir="/tmp")
        self.addCleanup(shutil.rmtree, control, True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = comet_config(self.stack, directory, self.port, control, self.config_extra,
                              self.config_hosts(), networks=self.networks)
        self.api_token = await first_admin_token(config)
        self.logfile = os.path.join(directory, "twistd.log")
        self.process, self.done = spawn(
            TWISTD + ["-n", "--pidfile=", "--logfile", self.logfile, "comet", "--config", config],
            env=_twistd_env(), path=directory)
        self.addCleanup(self._stop_twistd)
        await self._wait_listening()

    def config_hosts(self) -> list[dict] | None:
        """
        The compute hosts of the daemon's config (L{comet_config}'s C{hosts}):
        the testbed's own libvirtd alone (C{None}), or with L{all_hosts}
        every one of C{stack.json}'s C{hosts}.
        """
        if not self.all_hosts:
            return None
        return [{key: host[key] for key in ("name", "uri", "domain_type", "address",
                                            "tunnel_address", "ssh") if key in host}
                for host in self.stack["hosts"]]

    # --- the child and its API ----------------------------------------------

    def _log_tail(self, n: int = 4000) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def _log_since(self, mark: int) -> str:
        """
        The log written after byte C{mark} (C{os.path.getsize} of the log
        then).  Sliced as bytes, then decoded: a character offset would land
        past the mark by one for each extra byte of every non-ASCII character
        logged before it (which cut the start of the very line a test looked for).
        """
        try:
            with open(self.logfile, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    async def _wait_listening(self, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.done.called:
                self.fail("twistd exited before listening:\n" + self._log_tail())
            try:
                answer = await self.request("GET", "/cluster")
                if answer.code == 200:
                    return
            except Exception:
                pass
            await _sleep(0.2)
        self.fail("twistd did not listen within %ss:\n%s" % (timeout, self._log_tail()))

    async def _stop_twistd(self):
        if self.done.called:
            return
        self.process.signalProcess("TERM")
        killer = reactor.callLater(30, lambda: self.done.called or self.process.signalProcess("KILL"))
        outcome = await self.done
        if killer.active():
            killer.cancel()
        self.assertIn(outcome.signal, (None, signal.SIGTERM), self._log_tail())

    async def request(self, method: str, path: str, body=None) -> _Answer:
        headers = bearer(self.api_token)
        data = None
        if method in ("POST", "PUT", "DELETE"):
            headers[b"Content-Type"] = [b"application/json"]   # 415 without, a body or not
        if body is not None:
            data = json.dumps(body).encode()
        response = await http().request(method, self.base_url + path, data=data, headers=headers)
        return _Answer(response.code, response.headers, await response.content())

    async def get(self, path: str):
        answer = await self.request("GET", path)
        self.assertEqual(answer.code, 200, (path, answer))
        return answer.json

    async def wait_task(self, answer: _Answer, timeout: float = 600) -> dict:
        """Poll the task a 202 answered until it is no longer running."""
        self.assertEqual(answer.code, 202, answer)
        href = answer.json["href"]
        deadline = time.monotonic() + timeout
        while True:
            task = await self.get(href)
            if task["status"] != "running":
                return task
            if time.monotonic() > deadline:
                self.fail(f"task {href} still running after {timeout} s: {task}")
            await _sleep(POLL)

    async def finished(self, answer: _Answer, timeout: float = 600) -> dict:
        task = await self.wait_task(answer, timeout)
        self.assertEqual(task["status"], "finished", (task, self._log_tail()))
        return task

    async def pick_pool(self, need: int) -> str:
        """
        The first active storage pool with C{need} bytes free (the testbed's
        zpools hold 1.9 GiB, and another test's volumes may be there now),
        trying the servers in L{pools_from_last}'s order.
        """
        seen = []
        servers = self.stack["servers"]
        for server in reversed(servers) if self.pools_from_last else servers:
            info = await self.get(f"/storagepools/{server['storagepool']}")
            if info["state"] == "active" and info["available"] >= need:
                return info["name"]
            seen.append(f"{info['name']}: {info['state']}, {info['available']} bytes free")
        self.fail(f"no storage pool has {need} bytes free: {seen}")

    async def until(self, what: str, check, timeout: float = 120, every: float = POLL):
        """
        What C{check()} (a coroutine function) returns once it is true,
        asked every C{every} seconds; the test fails after C{timeout}
        seconds, naming C{what} and showing the daemon's log.
        """
        deadline = time.monotonic() + timeout
        while True:
            outcome = await check()
            if outcome:
                return outcome
            if time.monotonic() > deadline:
                self.fail(f"{what} not within {timeout} s:\n{self._log_tail()}")
            await _sleep(every)

    async def diskless_cluster(self, memory: int = 64) -> tuple[str, str]:
        """
        A template of C{memory} MB with neither disk nor NIC (its VMs run
        their firmware only: nothing to boot, nothing to wait for) and a
        cluster, both deleted at the end: C{(template, cluster)}.
        """
        template, cluster = f"it-{self.token}-t", f"it-{self.token}-c"
        answer = await self.request(
            "POST", "/templates", {"name": template, "memory": memory, "cpus": 1})
        self.assertEqual(answer.code, 201, answer)
        self.addCleanup(self.request, "DELETE", f"/templates/{template}")
        answer = await self.request("POST", "/cluster", {"name": cluster})
        self.assertEqual(answer.code, 201, answer)
        self.addCleanup(self.request, "DELETE", f"/cluster/{cluster}", {"force": True})
        return template, cluster

    async def make_vm(self, cluster: str, template: str) -> dict:
        """
        A new VM of C{cluster}: its representation.  Whatever happens to
        Comet's own clean-up (a test may stop the host it needs), its domain
        is removed from whichever testbed host has it at the end (cleanups run
        last-added first: after those a test adds later, a thaw included).
        """
        answer = await self.request("POST", f"/cluster/{cluster}/vms", {"template": template})
        self.assertEqual(answer.code, 201, answer)
        vm = answer.json
        self.addCleanup(removeDomainsEverywhere, self.stack, [f"comet-{vm['uuid']}"])
        return vm

    async def start(self, href: str) -> dict:
        """Start the VM at C{href} (a task followed if it is one); the VM once running."""
        answer = await self.request("POST", f"{href}/start", {})
        self.assertIn(answer.code, (200, 202), answer)
        if answer.code == 202:
            await self.finished(answer)
        return await self.wait_state(href, "running", 120)

    async def wait_state(self, href: str, state: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            vm = await self.get(href)
            if vm["state"] == state:
                return vm
            if time.monotonic() > deadline:
                self.fail(f"{href} is {vm['state']}, not {state}, after {timeout} s")
            await _sleep(POLL)

