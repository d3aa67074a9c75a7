"""
SIGKILL at every step, on the real testbed (issue 9's first "Done when").

For each (operation, step, before/after) of the cases below, one test: the
daemon (a C{twistd -n comet} child with C{[debug] kill_at_file} set, see
L{comet.debug}) is told to kill itself at that checkpoint, the operation is
asked for through the API, the child dies of SIGKILL there, it is started
again over the same files (C{[reconcile] interval = 2}), and once the
C{intents} table is empty (everything repaired) the REAL backends are
compared with the records:

 - every zvol and ZFS snapshot under the test's names (its token, a clone of
   its base volume, a VM of its database) is a volume record, a VM's disk,
   a VM's base snapshot or a recorded VM snapshot;
 - every tgt target of those is the target its volume record names;
 - every libvirt domain C{comet-<uuid>} of its VMs belongs to a VM placed on
   the host, and every placed VM has its domain;
 - every volume record has its zvol, every recorded target exists, every
   recorded snapshot has its ZFS snapshots;
 - the interrupted operation's task (if it ran under one) is C{failed} with
   "repaired" in its message; otherwise the daemon's log says the reconciler
   repaired the interrupted operation.

One daemon per test class, kept (with what the class set up: pool, base
volume, template, cluster, guest) from one test to the next: it is started
with L{subprocess.Popen}, outside the reactor, because trial removes what a
test leaves in the reactor.  The class's clean-up (C{tearDownClass}, also at
exit) stops it and removes by hand whatever carries the test's names.  The
steps of an operation of L{comet.model.operations.REGISTRY} come from its
steps enum (a new step is covered with no line here;
tests/model/operations/test_registry.py checks every one is); another
operation's new step is one line in a class's C{CASES}.

L{GuestKillTests} also checks that what a running guest wrote before a kill
is still there after it (read back live, then after a stop and a start).
Skipped, with the reason, when the testbed is not up.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.web.server import Site
from twisted.web.static import File

from comet.model.operations import (
    attach, net_down, net_up, snapshot_delete, snapshot_revert, snapshot_take, vm_create,
    vm_delete, vm_fence, vm_migrate, vm_start, unmap, vm_stop, volume_create, volume_delete,
    volume_resize,
)
from comet.remote.netdev import parse_devices
from comet.remote.tgt import parse_targets
from tests._qcow2 import qcow2_of
from tests.integration import _testbed
from tests.integration._console import DomainConsole
from tests.integration._daemon import CometDaemonCase, _sleep, comet_config, first_admin_token
from tests.integration._testbed import requireTestbed
from tests.model.operations.crash import steps
from tests.model.operations.test_snapshot_revert import ROLLBACK as REVERT_ROLLBACK
from tests.model.operations.test_vm_delete import STOPPED_DELETE
from tests.test_service import TWISTD, _twistd_env, free_port

MiB = 1024**2
WHEN = ("before", "after")
#: Kinds that run under a task (the API answers 202); the others answer when done.
TASKED = {"volume.create", "vm.stop", "unmap", "cluster.start", "cluster.stop", "vm.migrate",
          "vm.fence"}
#: Seconds a guest may take to boot (TCG).
BOOT_TIMEOUT = 180


class _Child:
    """The daemon, started outside the reactor (it outlives each test)."""

    def __init__(self, directory: str, config: str, logfile: str):
        with open(os.path.join(directory, "twistd.stderr"), "ab") as err:
            self.popen = subprocess.Popen(
                TWISTD + ["-n", "--pidfile=", "--logfile", logfile, "comet", "--config", config],
                env=_twistd_env(), cwd=directory, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err)

    @property
    def called(self) -> bool:
        """Whether it has exited (the name C{CometDaemonCase._wait_listening} reads)."""
        return self.popen.poll() is not None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class _State:
    """What one test class shares: its daemon's files, its child, its fixture."""

    def __init__(self, token: str):
        self.token = token
        self.directory = tempfile.mkdtemp(prefix="comet-kill-")
        # ssh ControlMaster socket paths must be short: a directory of our own in /tmp,
        # for the daemon's masters and the test's own (_testbed.sshArgv), which the
        # class's tests share: a new connection per check cost a handshake each.
        self.control = tempfile.mkdtemp(prefix="ck-", dir="/tmp")
        self.port = free_port()
        self.logfile = os.path.join(self.directory, "twistd.log")
        self.killfile = os.path.join(self.directory, "kill-at")
        self.database = os.path.join(self.directory, "comet.sqlite")
        self.config = ""
        self.api_token = ""
        self.child: _Child | None = None
        self.fixture: dict | None = None
        #: Every VM uuid the class's daemon ever had (its clean-up removes their domains).
        self.uuids: set[str] = set()
        self.cleaned = False


def _query(database: str, sql: str, *args) -> list[tuple]:
    """Rows from the daemon's database, read-only (the daemon may write meanwhile)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _domain_names(conn) -> list[str]:
    return [d.name() for d in conn.listAllDomains(0)]


def _ssh_sync(stack: dict, server: dict, command: str, control: str) -> tuple[int, str]:
    done = subprocess.run(_testbed.sshArgv(stack, server, command, control),
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


class KillStepsCase(CometDaemonCase):
    """
    The machinery: subclasses give C{CASES} (label, kind, step) and, for each
    label, C{async def case_<label with _>(self, step)} that prepares what the
    operation needs and returns a coroutine function that asks for it (and
    answers the API's answer), and optionally C{after_<label>} to clean up.
    """

    timeout = 300
    CASES: list[tuple[str, str, str]] = []
    _state: _State | None = None
    #: Whether the daemon gets every compute host of C{stack.json}, not only
    #: the testbed's own libvirtd (the checks then look at every one).
    all_hosts = False
    #: Whether its hosts carry clusters' private networks (ssh, tunnel_address).
    networks = False

    @classmethod
    def compute_hosts(cls, stack: dict) -> list[dict]:
        """The compute hosts the class's daemon has (C{name}, C{uri}, ...)."""
        if cls.all_hosts:
            return _testbed.computeHosts(stack)
        return [{"name": "local", "uri": stack["host_uri"], "domain_type": stack["domain_type"]}]

    # --- the shared daemon ----------------------------------------------------------

    async def setUp(self):
        self.stack = requireTestbed()
        cls = type(self)
        state = cls.__dict__.get("_state")
        if state is None:
            state = cls._state = _State(secrets.token_hex(3))
            atexit.register(cls._clean_up_now)
            extra = {**cls.config_extra, "reconcile": {"interval": 2},
                     "debug": {"kill_at_file": state.killfile}}
            if cls.networks:
                # VNIs no other test's daemon uses (they are named by VNI alone on the hosts)
                first = 20000 + secrets.randbelow(1000) * 100
                extra["network"] = {"vni_range": f"{first}-{first + 99}"}
            state.config = comet_config(self.stack, state.directory, state.port, state.control,
                                        extra, hosts=self.compute_hosts(self.stack),
                                        networks=cls.networks)
            state.api_token = await first_admin_token(state.config)
        self.state = state
        self.token = state.token
        self.port = state.port
        self.base_url = f"http://127.0.0.1:{state.port}"
        self.api_token = state.api_token
        self.logfile = state.logfile
        if state.child is None or state.child.called:
            await self._start_child()
        else:
            self.done = state.child
            await self._wait_listening()
        if state.fixture is None:
            state.fixture = await self.prepare()
        self.fixture = state.fixture

    async def _start_child(self):
        if os.path.exists(self.state.killfile):
            os.unlink(self.state.killfile)
        self.state.child = self.done = _Child(self.state.directory, self.state.config,
                                              self.state.logfile)
        await self._wait_listening()

    async def prepare(self) -> dict:
        """What the class's cases share (made once, by its first test)."""
        return {}

    @classmethod
    def tearDownClass(cls):
        cls._clean_up_now()

    @classmethod
    def _clean_up_now(cls):
        """
        Stop the daemon; remove by hand every domain, target, secret and zvol
        of the class (blocking: no test runs now).
        """
        state = cls.__dict__.get("_state")
        if state is None or state.cleaned:
            return
        state.cleaned = True
        if state.child is not None:
            state.child.stop()
        stack = _testbed.loadStack()
        uuids = set(state.uuids)
        secrets_ = []
        if os.path.exists(state.database):
            try:
                uuids |= {r[0] for r in _query(state.database, "SELECT uuid FROM vms")}
                secrets_ = [r[0] for r in _query(state.database,
                                                  "SELECT secret_uuid FROM storage_volumes")]
            except sqlite3.Error:
                pass
        problems = []

        def remove(conn):
            import libvirt

            problems.extend(
                f"domain removed: {gone}" for gone in
                _testbed.removeDomainsWith(conn, [f"comet-{uuid}" for uuid in uuids]))
            for secret in secrets_:
                try:
                    conn.secretLookupByUUIDString(secret).undefine()
                except libvirt.libvirtError:
                    pass

        for host in cls.compute_hosts(stack):
            try:
                _testbed._libvirtCall(host["uri"], remove)
            except Exception as e:   # noqa: BLE001 -- clean up the rest anyway
                problems.append(f"libvirt on {host['name']}: {e!r}")

        def ours(name: str) -> bool:
            return state.token in name or any(u in name for u in uuids)

        for server in stack["servers"]:
            code, out = _ssh_sync(stack, server, "tgtadm --lld iscsi --mode target --op show",
                                state.control)
            for target in parse_targets(out) if code == 0 else []:
                if ours(target.iqn):
                    _ssh_sync(stack, server, "tgtadm --lld iscsi --mode target --op delete"
                                             f" --force --tid {int(target.tid)}", state.control)
                    problems.append(f"target {target.iqn} removed")
            code, out = _ssh_sync(stack, server, "zfs list -H -o name,origin -t volume -r "
                                  + server["dataset"], state.control)
            names = [line.split("\t") for line in out.splitlines() if "\t" in line]
            mine = [n for n, origin in names if ours(n) or ours(origin)]
            # clones first, then the bases (-R: their snapshots and what is left)
            for name in sorted(mine, key=lambda n: state.token in n):
                code, out = _ssh_sync(stack, server, f"zfs destroy -R {name}", state.control)
                problems.append(f"zvol {name} destroyed" if code == 0 else
                                f"zvol {name}: {out.strip()}")
        for host in cls.compute_hosts(stack):
            if not host.get("local_dataset"):
                continue
            code, out = _ssh_sync(stack, host, "zfs list -H -o name -t volume -r "
                                  + host["local_dataset"], state.control)
            for name in out.split() if code == 0 else []:
                if ours(name):
                    _ssh_sync(stack, host, f"zfs destroy -r {name}", state.control)
                    problems.append(f"local copy {name} on {host['name']} destroyed")
        _testbed.closeMasters(state.control)
        shutil.rmtree(state.directory, True)
        shutil.rmtree(state.control, True)
        if problems:
            sys.stderr.write(f"\n{cls.__name__} clean-up (by hand): " + "; ".join(problems) + "\n")

    # --- one case ----------------------------------------------------------------------

    @classmethod
    def generate(cls) -> None:
        """One test method per (case, before/after)."""
        for label, kind, step in cls.CASES:
            for when in WHEN:
                name = re.sub(r"[^a-z0-9]+", "_", f"test_{label}_{step}_{when}".lower())

                async def test(self, label=label, kind=kind, step=step, when=when):
                    await self.kill_case(label, kind, step, when)

                test.__name__ = name
                test.__doc__ = f"SIGKILL {when} {kind!r} step {step!r} ({label}); repaired."
                setattr(cls, name, test)

    async def kill_case(self, label: str, kind: str, step: str, when: str) -> None:
        case = getattr(self, "case_" + label.replace(".", "_").replace("/", "_"))
        trigger = await case(step)
        after = getattr(self, "after_" + label.replace(".", "_").replace("/", "_"), None)
        if after is not None:
            # also after a failure, so that the next case starts clean (if the daemon runs)
            self.addCleanup(lambda: None if self.state.child.called else ensureDeferred(after()))
        mark = os.path.getsize(self.logfile)
        last_task = _query(self.state.database, "SELECT COALESCE(MAX(id), 0) FROM tasks")[0][0]
        await self.kill_at(kind, step, when, trigger)
        await self._start_child()
        await self.wait_repaired()
        tasks = _query(self.state.database, "SELECT id, status, message FROM tasks WHERE id > ?",
                       last_task)
        if kind in TASKED:
            self.assertEqual(len(tasks), 1, tasks)
        for task_id, status, message in tasks:
            self.assertEqual(status, "failed", (task_id, message))
            self.assertIn("repaired", message, (task_id, message))
            self.assertIn(f"{kind} of", message)
        log = self._log_since(mark)
        self.assertIn(f"reconciler: interrupted {kind} of", log)
        await self.check_backends()

    async def kill_at(self, kind: str, step: str, when: str, trigger) -> None:
        """Arm the kill file, ask for the operation, wait until the daemon died of SIGKILL."""
        with open(self.state.killfile, "w") as f:
            f.write(f"{kind} {step} {when}\n")
        answer: list = []
        asked = ensureDeferred(trigger())
        asked.addCallbacks(answer.append, lambda failure: answer.append(None))
        child = self.state.child
        deadline = time.monotonic() + 120
        while not child.called:
            if answer and answer[0] is not None:
                got = answer[0]
                if got.code != 202:
                    self.fail(f"answered {got} without dying at {kind} {step} {when}:\n"
                              + self._log_tail())
                try:
                    task = (await self.request("GET", got.json["href"])).json
                except Exception:   # noqa: BLE001 -- it died meanwhile: the loop sees it
                    task = {"status": "running"}
                if task["status"] != "running":
                    self.fail(f"the task ended without dying at {kind} {step} {when}: {task}")
            if time.monotonic() > deadline:
                self.fail(f"the daemon did not die at {kind} {step} {when}:\n" + self._log_tail())
            await _sleep(0.2)
        await asked
        self.assertEqual(child.popen.returncode, -signal.SIGKILL, self._log_tail())
        self.assertFalse(os.path.exists(self.state.killfile))

    async def wait_repaired(self, timeout: float = 90) -> None:
        """Until the intents table is empty: every interrupted operation repaired."""
        deadline = time.monotonic() + timeout
        while True:
            rows = _query(self.state.database, "SELECT kind, object, step, state FROM intents")
            if not rows:
                return
            if time.monotonic() > deadline:
                self.fail(f"not repaired after {timeout} s: {rows}\n" + self._log_tail())
            await _sleep(0.5)

    # --- the invariants, on the real backends -------------------------------------------

    async def check_backends(self) -> None:
        db = self.state.database
        vms = dict(_query(db, "SELECT uuid, host FROM vms"))
        self.state.uuids |= set(vms)
        volumes = _query(db, "SELECT pool, name, zvol, vm_uuid, target, copy_host"
                             " FROM storage_volumes")
        snapshots = _query(db, "SELECT vm_uuid, name, volumes FROM vm_snapshots")
        uuids = self.state.uuids

        def ours(name: str) -> bool:
            return bool(name) and (self.token in name or any(u in name for u in uuids))

        problems = []
        servers = self.stack["servers"]
        hosts = self.compute_hosts(self.stack)
        # both servers and every host's libvirt at once (each ssh login takes a while)
        answers = await gatherResults([
            *(ensureDeferred(self._ssh(
                server, f"zfs list -H -o name,origin -t volume,snapshot -r {server['dataset']}"
                        " && echo -- && tgtadm --lld iscsi --mode target --op show"))
              for server in servers),
            *(_testbed.hostLibvirtCall(self.stack, host["name"], _domain_names)
              for host in hosts),
        ], consumeErrors=True)
        outs = answers[:len(servers)]
        on_host = dict(zip((h["name"] for h in hosts), answers[len(servers):]))
        self.shown = dict(zip((s["address"] for s in servers), outs))
        for server, out in zip(servers, outs):
            pool = server["storagepool"]
            listing, shown = out.split("--\n", 1)
            rows = [line.split("\t") for line in listing.splitlines()]
            zvols = {name: origin for name, origin in rows if "@" not in name}
            zsnaps = {name for name, _ in rows if "@" in name}
            mine = {n for n, origin in zvols.items() if ours(n) or ours(origin)}
            recorded = {r[2]: r for r in volumes if r[0] == pool}

            def volume_of(zvol: str) -> str:
                """The recorded zvol C{zvol} is, or whose data a revert set aside."""
                aside = re.fullmatch(r"(.+)-old-[0-9a-f]+", zvol)
                return aside.group(1) if aside and aside.group(1) in recorded else zvol

            for zvol in sorted(mine - set(recorded)):
                if volume_of(zvol) not in recorded:
                    problems.append(f"zvol {zvol} has no record")
            for zvol in sorted(set(recorded) - set(zvols)):
                problems.append(f"volume record {recorded[zvol][:2]} has no zvol {zvol}")
            for snap in sorted(zsnaps):
                zvol, name = snap.split("@", 1)
                if zvol not in mine:
                    continue
                if name.startswith("comet-sync-"):
                    # local-copy mode's common snapshot with the host's copy:
                    # only while a host holds one (issue 21)
                    if recorded.get(zvol, (None,) * 6)[5] is None:
                        problems.append(f"sync snapshot {snap} of a volume no host holds")
                elif name.startswith("comet-base-"):
                    if name[len("comet-base-"):] not in vms:
                        problems.append(f"base snapshot {snap} of no VM")
                elif not any(f"{pool}/{recorded.get(volume_of(zvol), ('', '?'))[1]}"
                             in json.loads(vols)
                             and name == f"comet-{sname}" for _, sname, vols in snapshots):
                    problems.append(f"snapshot {snap} has no record")
            targets = {t.iqn for t in parse_targets(shown)}
            exported = {r[4] for r in recorded.values() if r[4]}
            for iqn in sorted(targets):
                if ours(iqn.split(":", 1)[-1]) and iqn not in exported:
                    problems.append(f"target {iqn} on {server['address']} has no record")
            for iqn in sorted(exported - targets):
                problems.append(f"recorded target {iqn} does not exist")
            for vm_uuid, sname, vols in snapshots:
                for volume in json.loads(vols):
                    vpool, vname = volume.split("/", 1)
                    record = next((r for r in volumes if r[:2] == (vpool, vname)), None)
                    if vpool == pool and record is not None and not any(
                            z.endswith(f"@comet-{sname}") and volume_of(z.split("@")[0])
                            == record[2] for z in zsnaps):
                        problems.append(f"snapshot {sname} of VM {vm_uuid}: no ZFS snapshot"
                                        f" of {record[2]}")
        problems += await self.check_local_copies(volumes)
        for host, domains in on_host.items():
            for name in domains:
                uuid = name[len("comet-"):]
                if name.startswith("comet-") and uuid in uuids and vms.get(uuid) != host:
                    problems.append(f"domain {name} on {host} of a VM"
                                    f" {'placed on ' + str(vms[uuid]) if uuid in vms else 'gone'}")
        for uuid, host in vms.items():
            if host is not None and f"comet-{uuid}" not in on_host.get(host, ()):
                problems.append(f"VM {uuid} placed on {host} has no domain")
        self.assertEqual(problems, [], self._log_tail())

    async def check_local_copies(self, volumes: list[tuple]) -> list[str]:
        """
        Local-copy mode (issue 21): on each of the class's hosts with a local
        dataset, every copy of ours is of a volume whose record says that
        host holds it (C{copy_host}), and every such volume has its copy
        there: one authoritative copy, no orphan.
        """
        problems = []
        for host in self.compute_hosts(self.stack):
            dataset = host.get("local_dataset")
            if not dataset:
                continue
            listing = await self._ssh(host, f"zfs list -H -o name -t volume -r {dataset}")
            copies = {line for line in listing.split() if self.token in line
                      or any(u in line for u in self.state.uuids)}
            held = {f"{dataset}/{pool}/{name}": copy_host
                    for pool, name, _, _, _, copy_host in volumes}
            for copy in sorted(copies):
                if held.get(copy) != host["name"]:
                    problems.append(f"copy {copy} on {host['name']}: its volume's record"
                                    f" says {held.get(copy, 'no record')!r}")
            for copy, copy_host in sorted(held.items()):
                if copy_host == host["name"] and copy not in copies:
                    problems.append(f"volume {copy} is held by {host['name']}: no copy there")
        return problems

    async def _ssh(self, server: dict, command: str) -> str:
        """
        C{command}'s output on C{server}; an ssh that cannot connect (255) is
        tried again for a minute: other tests stop the storage servers for a
        while (test_faults), and the invariants need both.
        """
        deadline = time.monotonic() + 60
        while True:
            out, err, code = await _testbed.ssh(self.stack, server, command, check=False,
                                                control=self.state.control)
            if code != 255 or time.monotonic() > deadline:
                self.assertEqual(code, 0, (server["address"], command, err))
                return out
            await _sleep(2)

    # --- helpers for the cases -----------------------------------------------------------

    async def post(self, path: str, body=None, code: int = 201) -> dict:
        answer = await self.request("POST", path, {} if body is None else body)
        self.assertEqual(answer.code, code, answer)
        return answer.json

    async def new_volume(self, pool: str, name: str) -> None:
        answer = await self.request("POST", f"/storagepools/{pool}/storagevolumes",
                                    {"name": name, "capacity": 1})
        await self.finished(answer)

    async def delete_volume(self, pool: str, name: str) -> None:
        answer = await self.request("DELETE", f"/storagepools/{pool}/storagevolumes/{name}")
        self.assertIn(answer.code, (204, 404), answer)

    async def new_vm(self, cluster: str, start: bool = False) -> dict:
        vm = await self.post(f"/cluster/{cluster}/vms", {"template": self.fixture["template"]})
        self.state.uuids.add(vm["uuid"])
        if start:
            answer = await self.request("POST", vm["href"] + "/start", {})
            self.assertEqual(answer.code, 200, answer)
        return vm

    async def delete_vm(self, vm: dict) -> None:
        answer = await self.request("DELETE", vm["href"], {"force": True})
        self.assertIn(answer.code, (204, 404), answer)

    def name(self, what: str) -> str:
        return f"k{self.token}-{what}-{secrets.token_hex(2)}"

    async def base_fixture(self, pool: str, base: str, memory: int) -> dict:
        template, cluster = f"k{self.token}", f"k{self.token}"
        await self.post("/templates", {"name": template, "memory": memory, "cpus": 1,
                                       "disk": {"pool": pool, "volume": base}})
        await self.post("/cluster", {"name": cluster})
        return {"pool": pool, "base": base, "template": template, "cluster": cluster}


#: The steps of a raw image's download (a qcow2 image's has more, but not WRITE_IMAGE).
RAW_DOWNLOAD = (volume_create.Step.CREATE_ZVOL, volume_create.Step.WRITE_IMAGE,
                volume_create.Step.RECORD)


class VolumeKillTests(KillStepsCase):
    """Volumes: create (empty, downloaded) and delete."""

    pools_from_last = True  # the second stream's (tests/conftest.py)

    CASES = [
        # An empty volume's create: the zvol and the record (no download's steps,
        # a qcow2 image's neither: with those here, such a case never died).
        *[("volume.create", "volume.create", step.value) for step in
          (volume_create.Step.CREATE_ZVOL, volume_create.Step.RECORD)],
        *[("download", "volume.create", step.value) for step in volume_create.Step
          if step in RAW_DOWNLOAD],
        # A qcow2 image's own steps (its staging zvol: made, written, converted, destroyed).
        *[("download/qcow2", "volume.create", step.value) for step in volume_create.Step
          if step not in RAW_DOWNLOAD],
        ("volume.delete", "volume.delete", volume_delete.Step.DESTROY_ZVOL.value),
        ("volume.delete", "volume.delete", volume_delete.Step.FORGET_RECORD.value),
        ("volume.delete/force", "volume.delete", volume_delete.Step.DESTROY_LEFTOVERS.value),
        ("volume.delete/force", "volume.delete", volume_delete.Step.DESTROY_ZVOL.value),
        ("volume.resize", "volume.resize", volume_resize.Step.SET_VOLSIZE.value),
    ]

    async def prepare(self):
        image = os.path.join(self.state.directory, "image.raw")
        with open(image, "wb") as f:
            f.write(b"\xab" * (8 * MiB))
        with open(os.path.join(self.state.directory, "image.qcow2"), "wb") as f:
            f.write(await qcow2_of(b"\xab" * (8 * MiB)))
        return {"pool": await self.pick_pool(64 * MiB), "image": image}

    def _volumes(self, name):
        return f"/storagepools/{self.fixture['pool']}/storagevolumes" + (f"/{name}" if name else "")

    async def case_volume_create(self, step):
        self.volume = self.name("v")
        return lambda: self.request("POST", self._volumes(None),
                                    {"name": self.volume, "capacity": 1})

    async def case_download(self, step, image="image.raw"):
        self.volume = self.name("d")
        site = Site(File(self.state.directory))
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}/{image}"
        return lambda: self.request("POST", self._volumes(None), {"name": self.volume, "url": url})

    async def case_download_qcow2(self, step):
        return await self.case_download(step, "image.qcow2")

    async def case_volume_delete(self, step):
        self.volume = self.name("x")
        await self.new_volume(self.fixture["pool"], self.volume)
        return lambda: self.request("DELETE", self._volumes(self.volume))

    async def case_volume_delete_force(self, step):
        """
        A volume with a ZFS snapshot and a clone of it that no record owns
        (as an earlier Comet left them): a plain DELETE is a 409 saying so,
        an admin's forced one destroys them with it (issue 14).
        """
        self.volume = self.name("f")
        pool = self.fixture["pool"]
        await self.new_volume(pool, self.volume)
        server = next(s for s in self.stack["servers"] if s["storagepool"] == pool)
        zvol = f"{server['dataset']}/{self.volume}"
        await self._ssh(server, f"zfs snapshot -o comet:owner=comet {zvol}@comet-left"
                                f" && zfs clone -o comet:owner=comet {zvol}@comet-left"
                                f" {zvol}-old-00ff")
        answer = await self.request("DELETE", self._volumes(self.volume))
        self.assertEqual(answer.code, 409, answer)
        self.assertIn('{"force": true}', answer.json["reason"])
        return lambda: self.request("DELETE", self._volumes(self.volume), {"force": True})

    async def case_volume_resize(self, step):
        self.volume = self.name("r")
        await self.new_volume(self.fixture["pool"], self.volume)
        return lambda: self.request("PUT", self._volumes(self.volume), {"capacity": 2})

    async def after_volume_create(self):
        await self.delete_volume(self.fixture["pool"], self.volume)

    after_download = after_volume_delete = after_volume_delete_force = after_volume_create
    after_download_qcow2 = after_volume_create
    after_volume_resize = after_volume_create


class VMKillTests(KillStepsCase):
    """
    VMs on an empty base volume (no guest: the domain runs firmware only, which
    is all these steps need): create, delete, start, stop, cluster start and
    stop, attach, snapshot, and unmap from a shut-off VM.
    """

    pools_from_last = True  # the second stream's (tests/conftest.py)

    CASES = [
        *[("vm.create", "vm.create", step) for step in steps(vm_create.OPERATION)
          if step != vm_create.Step.MAKE_SEED.value],
        # (Only a provisioned create makes a seed.)
        ("vm.create/seed", "vm.create", vm_create.Step.MAKE_SEED.value),
        *[("vm.delete", "vm.delete", step) for step in STOPPED_DELETE],
        ("vm.delete/attached", "vm.delete", vm_delete.Step.DELETE_DISKS.value),
        # The steps only a VM placed on a host goes through.
        *[("vm.delete/running", "vm.delete", step) for step in steps(vm_delete.OPERATION)
          if step not in STOPPED_DELETE],
        *[("vm.start", "vm.start", step) for step in steps(vm_start.OPERATION)],
        *[("vm.stop", "vm.stop", step) for step in steps(vm_stop.OPERATION)],
        *[("cluster.start", "cluster.start", step) for step in steps(vm_start.OPERATION)],
        *[("cluster.stop", "cluster.stop", step) for step in steps(vm_stop.OPERATION)],
        *[("attach", "attach", step) for step in steps(attach.OPERATION)],
        *[("snapshot", "snapshot", step.value) for step in snapshot_take.Step],
        ("unmap/stopped", "unmap", unmap.Step.FORGET_ATTACHMENT.value),
        ("unmap/snapshot", "unmap", unmap.Step.DROP_SNAPSHOTS.value),
        *[("revert", "snapshot.revert", step.value) for step in REVERT_ROLLBACK],
        ("revert/branch", "snapshot.revert", snapshot_revert.Step.BRANCH.value),
        *[("revert/placed", "snapshot.revert", step.value)
          for step in (snapshot_revert.Step.UNEXPORT, snapshot_revert.Step.EXPORT)],
        # A branch to drop is the "snapshot.delete/branch" case's.
        *[("snapshot.delete", "snapshot.delete", step.value) for step in snapshot_delete.Step
          if step is not snapshot_delete.Step.DROP_BRANCHES],
        ("snapshot.delete/branch", "snapshot.delete", snapshot_delete.Step.DROP_BRANCHES.value),
        # (VMKillTests has the base volume a kept disk is cloned from.)
        ("volume.delete/kept", "volume.delete", volume_delete.Step.DESTROY_ORIGIN.value),
    ]

    async def prepare(self):
        pool = await self.pick_pool(64 * MiB)
        base = f"k{self.token}-base"
        await self.new_volume(pool, base)
        return await self.base_fixture(pool, base, memory=64)

    # Each case has a VM of its own (and deletes it after).

    async def case_vm_create(self, step):
        self.vm = None
        return lambda: self.request("POST", f"/cluster/{self.fixture['cluster']}/vms",
                                    {"template": self.fixture["template"]})

    async def case_vm_create_seed(self, step):
        self.vm = None
        return lambda: self.request("POST", f"/cluster/{self.fixture['cluster']}/vms",
                                    {"template": self.fixture["template"],
                                     "user_data": "#cloud-config\n"})

    async def case_vm_delete(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"])
        return lambda: self.request("DELETE", self.vm["href"], {"force": True})

    async def case_vm_delete_attached(self, step):
        """
        A VM whose snapshots cover an attached volume, reverted to the older
        one (a branch on that volume too): its delete leaves the volume
        without them, and deletable (issue 14).
        """
        await self._attached_volume()
        for name in ("s1", "s2"):
            await self.post(self.vm["href"] + "/snapshots", {"name": name})
        await self.post(self.vm["href"] + "/snapshots/s1/revert", {}, code=200)
        return lambda: self.request("DELETE", self.vm["href"], {"force": True})

    async def _attached_volume(self) -> dict:
        """A VM of its own (not started) with a volume of its own attached."""
        self.vm = await self.new_vm(self.fixture["cluster"])
        self.volume = self.name("u")
        await self.new_volume(self.fixture["pool"], self.volume)
        return await self.post(self.vm["href"] + "/storages",
                               {"pool": self.fixture["pool"], "vol": self.volume})

    async def case_vm_delete_running(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"], start=True)
        return lambda: self.request("DELETE", self.vm["href"], {"force": True})

    async def case_vm_start(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"])
        return lambda: self.request("POST", self.vm["href"] + "/start", {})

    async def case_vm_stop(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"], start=True)
        return lambda: self.request("POST", self.vm["href"] + "/stop",
                                    {"timeout": 0, "force": True})

    async def _cluster_of_one(self, start: bool):
        cluster = self.name("c")
        await self.post("/cluster", {"name": cluster})
        self.cluster = cluster
        self.vm = await self.new_vm(cluster, start=start)
        return f"/cluster/{cluster}"

    async def case_cluster_start(self, step):
        href = await self._cluster_of_one(start=False)
        return lambda: self.request("POST", href + "/start", {})

    async def case_cluster_stop(self, step):
        href = await self._cluster_of_one(start=True)
        return lambda: self.request("POST", href + "/stop", {"timeout": 0, "force": True})

    async def case_attach(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"], start=True)
        self.volume = self.name("a")
        await self.new_volume(self.fixture["pool"], self.volume)
        return lambda: self.request("POST", self.vm["href"] + "/storages",
                                    {"pool": self.fixture["pool"], "vol": self.volume})

    async def case_snapshot(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"])
        return lambda: self.request("POST", self.vm["href"] + "/snapshots", {"name": "s1"})

    async def _snapshots(self, *names, start: bool = False) -> None:
        self.vm = await self.new_vm(self.fixture["cluster"], start=start)
        for name in names:
            await self.post(self.vm["href"] + "/snapshots", {"name": name})

    async def case_revert(self, step):
        """Revert to the newest snapshot: a rollback."""
        await self._snapshots("s1")
        return lambda: self.request("POST", self.vm["href"] + "/snapshots/s1/revert", {})

    async def case_revert_branch(self, step):
        """Revert to an older snapshot: clone, promote, set the data aside, rename."""
        await self._snapshots("s1", "s2")
        return lambda: self.request("POST", self.vm["href"] + "/snapshots/s1/revert", {})

    async def case_revert_placed(self, step):
        """Revert of a VM shut off on its host: unexported first, exported again."""
        await self._snapshots("s1", start=True)
        await self.post(self.vm["href"] + "/poweroff", {}, code=200)
        return lambda: self.request("POST", self.vm["href"] + "/snapshots/s1/revert", {})

    async def case_snapshot_delete(self, step):
        await self._snapshots("s1", "s2")
        return lambda: self.request("DELETE", self.vm["href"] + "/snapshots/s1")

    async def case_unmap_snapshot(self, step):
        """Unmap of a volume a snapshot covers: the snapshot leaves the volume (issue 14)."""
        storage = await self._attached_volume()
        await self.post(self.vm["href"] + "/snapshots", {"name": "s1"})
        return lambda: self.request("POST", storage["actions"]["unmap"], {})

    async def case_snapshot_delete_branch(self, step):
        """After a revert to the older snapshot, the newer one lives on a branch: both go."""
        await self._snapshots("s1", "s2")
        await self.post(self.vm["href"] + "/snapshots/s1/revert", {}, code=200)
        return lambda: self.request("DELETE", self.vm["href"] + "/snapshots/s2")

    async def case_unmap_stopped(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"])
        self.volume = self.name("u")
        await self.new_volume(self.fixture["pool"], self.volume)
        storage = await self.post(self.vm["href"] + "/storages",
                                  {"pool": self.fixture["pool"], "vol": self.volume})
        return lambda: self.request("POST", storage["actions"]["unmap"], {})

    async def case_volume_delete_kept(self, step):
        """A VM's disk kept after its VM: the base snapshot it was cloned from goes with it."""
        vm = await self.new_vm(self.fixture["cluster"])
        answer = await self.request("DELETE", vm["href"], {"keep_storage": True})
        self.assertEqual(answer.code, 204, answer)
        self.vm = None
        self.volume = f"vm-{vm['uuid']}-vda"
        href = f"/storagepools/{self.fixture['pool']}/storagevolumes/{self.volume}"
        return lambda: self.request("DELETE", href)

    async def after_vm_create(self):
        if getattr(self, "vm", None) is not None:
            await self.delete_vm(self.vm)
        else:   # the VM made by the killed create, if it was kept
            for vm in await self.get(f"/cluster/{self.fixture['cluster']}/vms"):
                await self.delete_vm(vm)
        if getattr(self, "cluster", None):
            answer = await self.request("DELETE", f"/cluster/{self.cluster}", {"force": True})
            self.assertEqual(answer.code, 204, answer)
        if getattr(self, "volume", None):
            await self.delete_volume(self.fixture["pool"], self.volume)

    after_vm_delete = after_vm_delete_running = after_vm_start = after_vm_stop = after_vm_create
    after_vm_create_seed = after_vm_create
    after_cluster_start = after_cluster_stop = after_attach = after_snapshot = after_vm_create
    after_unmap_stopped = after_revert = after_revert_branch = after_revert_placed = after_vm_create
    after_snapshot_delete = after_vm_delete_attached = after_unmap_snapshot = after_vm_create
    after_snapshot_delete_branch = after_volume_delete_kept = after_vm_create


class GuestKillTests(KillStepsCase):
    """
    A real guest (the testbed's tiny image): unmap from the running VM (the
    guest must release the disk), and the guest's data across a kill.
    """

    pools_from_last = True  # the second stream's (tests/conftest.py)

    timeout = 400
    CASES = [
        # ("drop snapshots" is VMKillTests' "unmap/snapshot" case.)
        *[("unmap", "unmap", step.value) for step in unmap.Step
          if step is not unmap.Step.DROP_SNAPSHOTS],
    ]

    async def prepare(self):
        guest = self.stack["guest"]
        pool = await self.pick_pool(2 * guest["image_size"] + 128 * MiB)
        image = guest["image"]
        site = Site(File(os.path.dirname(image)))
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        try:
            url = f"http://127.0.0.1:{listening.getHost().port}/{os.path.basename(image)}"
            base = f"k{self.token}-gbase"
            answer = await self.request("POST", f"/storagepools/{pool}/storagevolumes",
                                        {"name": base, "url": url})
            await self.finished(answer)
        finally:
            await listening.stopListening()
        fixture = self.fixture = await self.base_fixture(pool, base, memory=160)
        vm = await self.new_vm(fixture["cluster"])
        await self.boot(vm)
        fixture["vm"] = vm
        return fixture

    async def boot(self, vm: dict) -> str:
        """Start the VM and wait for its guest; the marker it read at boot."""
        answer = await self.request("POST", vm["href"] + "/start", {})
        self.assertEqual(answer.code, 200, answer)
        console = await self.console(vm)
        try:
            ready = await console.waitFor(rb"COMET-GUEST: ready", BOOT_TIMEOUT)
        except Exception:
            self.fail(f"{vm['name']} did not boot; console:\n{console.output[-3000:]}")
        await console.waitFor(re.escape(self.stack["guest"]["prompt"].encode()), 60, ready.end())
        markers = re.findall(r"COMET-GUEST: marker=([^\r\n]*)", console.output)
        self.assertEqual(len(markers), 1, console.output)
        return markers[0]

    async def console(self, vm: dict) -> DomainConsole:
        console = DomainConsole(self.stack["host_uri"], f"comet-{vm['uuid']}")
        await console.connect()
        self.addCleanup(console.aclose)
        return console

    async def guest(self, console, command: str) -> str:
        status, output = await console.run(command, 60)
        self.assertEqual(status, 0, (command, output))
        return output

    async def read_marker(self, console) -> str:
        output = await self.guest(
            console, "echo \"<<$(dd if=/dev/comet-data bs=512 count=1 2>/dev/null"
                     " | tr '\\000' '\\n' | head -n 1)>>\"")
        found = re.findall(r"^<<([^\r\n]*)>>", output, re.M)
        self.assertEqual(len(found), 1, output)
        return found[0]

    async def case_unmap(self, step):
        vm = self.fixture["vm"]
        self.volume = self.name("g")
        await self.new_volume(self.fixture["pool"], self.volume)
        console = await self.console(vm)
        seen = await self.block_devices(console)
        storage = await self.post(vm["href"] + "/storages",
                                  {"pool": self.fixture["pool"], "vol": self.volume})
        # the guest has the disk before it is asked to let it go
        deadline = time.monotonic() + 60
        while not await self.block_devices(console) - seen:
            if time.monotonic() > deadline:
                self.fail(f"the guest did not see {self.volume} within 60 s")
            await _sleep(0.5)
        await console.aclose()
        return lambda: self.request("POST", storage["actions"]["unmap"], {})

    async def block_devices(self, console) -> set[str]:
        output = await self.guest(console, "echo \"<<$(ls /sys/block | tr '\\n' ' ')>>\"")
        found = re.findall(r"^<<([^\r\n]*)>>", output, re.M)
        self.assertEqual(len(found), 1, output)
        return set(found[0].split())

    async def after_unmap(self):
        volume = await self.get(f"/storagepools/{self.fixture['pool']}"
                                f"/storagevolumes/{self.volume}")
        self.assertEqual((volume["vm"], volume["target"]), (None, None))
        await self.delete_volume(self.fixture["pool"], self.volume)

    async def test_guest_data_survives_a_kill(self):
        """
        The guest writes a marker (dd conv=fsync); the daemon dies after the
        snapshot's ZFS snapshot was taken, before it was recorded; after the
        restart and repair the guest reads the marker back, and again at its
        next boot after a stop.
        """
        vm = self.fixture["vm"]
        marker = f"kill-{self.token}-{secrets.token_hex(3)}"
        console = await self.console(vm)
        await self.guest(console, f"echo {marker} | dd of=/dev/comet-data conv=fsync")
        self.assertEqual(await self.read_marker(console), marker)
        mark = os.path.getsize(self.logfile)
        await self.kill_at("snapshot", "take", "after", lambda: self.request(
            "POST", vm["href"] + "/snapshots", {"name": "k1"}))
        await self._start_child()
        await self.wait_repaired()
        self.assertIn("reconciler: interrupted snapshot of", self._log_since(mark))
        await self.check_backends()
        self.assertEqual(await self.get(vm["href"] + "/snapshots"), [])
        self.assertEqual(await self.read_marker(console), marker)   # live, after the kill
        await console.aclose()
        answer = await self.request("POST", vm["href"] + "/stop", {"timeout": 60, "force": True})
        await self.finished(answer)
        self.assertEqual(await self.boot(vm), marker)   # on disk: read at boot


class MigrateKillTests(KillStepsCase):
    """
    A running VM (firmware only, on an empty base volume) migrating between
    the testbed's two compute hosts, killed at each step: after the repair it
    runs on exactly one host, which its record names, and its disks' targets
    admit that host's address alone (and are recorded as exported there).
    """

    all_hosts = True
    CASES = [("vm.migrate", "vm.migrate", step) for step in steps(vm_migrate.OPERATION)]

    async def prepare(self):
        pool = await self.pick_pool(64 * MiB)
        base = f"k{self.token}-mbase"
        await self.new_volume(pool, base)
        return await self.base_fixture(pool, base, memory=64)

    async def case_vm_migrate(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"], start=True)
        return lambda: self.request("POST", self.vm["href"] + "/migrate", {})

    async def after_vm_migrate(self):
        await self.delete_vm(self.vm)

    async def check_backends(self) -> None:
        await super().check_backends()
        vm = await self.get(self.vm["href"])
        self.assertEqual(vm["state"], "running", vm)
        address = {h["name"]: h["address"] for h in self.compute_hosts(self.stack)}
        rows = _query(self.state.database, "SELECT pool, target, exported_to FROM"
                      " storage_volumes WHERE vm_uuid = ?", self.vm["uuid"])
        self.assertTrue(rows)
        pools = {s["storagepool"]: s["address"] for s in self.stack["servers"]}
        for pool, target, exported_to in rows:
            self.assertEqual(exported_to, vm["host"], (pool, target))
            [found] = [t for t in parse_targets(self.shown[pools[pool]].split("--\n", 1)[1])
                       if t.iqn == target]
            self.assertEqual(list(found.acl), [address[vm["host"]]], target)


class FenceKillTests(KillStepsCase):
    """
    A running VM (firmware only) on host2, whose libvirtd is then frozen
    (SIGSTOP: the host is dead to Comet, its QEMU goes on), evacuated
    fenced, killed at each step of its C{vm.fence}: the daemon starts again
    with host2 still frozen and repairs without asking it.  Then host2 is
    thawed (its leftover domain is removed by the reconciler) and the
    backends checked: the VM is placed on one host (local) or none, with its
    disks exported only there.
    """

    all_hosts = True
    #: A frozen host's calls are given up after this many seconds.
    config_extra = {"compute": {"libvirt_timeout": 10}}
    CASES = [("vm.fence", "vm.fence", step) for step in steps(vm_fence.OPERATION)]

    async def prepare(self):
        pool = await self.pick_pool(64 * MiB)
        base = f"k{self.token}-fbase"
        await self.new_volume(pool, base)
        return await self.base_fixture(pool, base, memory=64)

    async def maintenance(self, host: str, enabled: bool) -> None:
        await self.post(f"/hosts/{host}/maintenance", {"enabled": enabled}, code=200)

    def thaw(self) -> None:
        try:
            os.kill(self.frozen, signal.SIGCONT)
        except ProcessLookupError:
            pass

    async def case_vm_fence(self, step):
        # On host2: local in maintenance while it starts.
        await self.maintenance("local", True)
        try:
            self.vm = await self.new_vm(self.fixture["cluster"], start=True)
        finally:
            await self.maintenance("local", False)
        self.assertEqual((await self.get(self.vm["href"]))["host"], "host2")
        await self.maintenance("host2", True)
        self.frozen = _testbed.hostLibvirtdPid(self.stack, "host2")
        self.addCleanup(self.thaw)
        os.kill(self.frozen, signal.SIGSTOP)

        async def dead():
            return (await self.get("/hosts/host2"))["state"] == "unreachable"

        await self.until("host2 seen unreachable", dead, every=0.5)
        return lambda: self.request("POST", "/hosts/host2/evacuate", {"fenced": True})

    async def after_vm_fence(self):
        self.thaw()
        await self.maintenance("host2", False)
        await self.delete_vm(self.vm)

    async def check_backends(self) -> None:
        # Repaired without host2; now it comes back and its leftover domain goes.
        self.thaw()
        domain = f"comet-{self.vm['uuid']}"

        async def gone():
            def names(conn):
                return [d.name() for d in conn.listAllDomains(0)]

            return domain not in await _testbed.hostLibvirtCall(self.stack, "host2", names)

        await self.until("host2's leftover domain removed", gone, every=1)
        await super().check_backends()
        vm = await self.get(self.vm["href"])
        self.assertIn((vm["state"], vm["host"]), (("running", "local"), ("shutoff", None)), vm)


class NetKillTests(KillStepsCase):
    """
    A cluster's private network on the testbed's two compute hosts (over
    ssh, bridge + VXLAN): set up by a VM start, torn down by its stop, killed
    at each step; after the repair each host holds exactly the complete
    networks its placed VMs need (no bridge or tunnel left, none missing).
    """

    all_hosts = True
    networks = True
    CASES = [
        *[("net.up", "net.up", step) for step in steps(net_up.OPERATION)],
        *[("net.down", "net.down", step) for step in steps(net_down.OPERATION)],
    ]

    async def prepare(self):
        pool = await self.pick_pool(64 * MiB)
        base = f"k{self.token}-nbase"
        await self.new_volume(pool, base)
        fixture = await self.base_fixture(pool, base, memory=64)
        answer = await self.request("PUT", f"/templates/{fixture['template']}",
                                    {"nics": [{"network": "private"}]})
        self.assertEqual(answer.code, 200, answer)
        return fixture

    async def case_net_up(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"])
        return lambda: self.request("POST", self.vm["href"] + "/start", {})

    async def case_net_down(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"], start=True)
        return lambda: self.request("POST", self.vm["href"] + "/stop",
                                    {"timeout": 0, "force": True})

    async def after_net_up(self):
        await self.delete_vm(self.vm)

    after_net_down = after_net_up

    async def check_backends(self) -> None:
        await super().check_backends()
        needed = _query(self.state.database,
                        "SELECT DISTINCT v.host, cn.vni FROM vms v"
                        " JOIN cluster_networks cn ON cn.cluster_id = v.cluster_id"
                        " JOIN vm_nics n ON n.vm_id = v.id AND n.network = 'private'"
                        " WHERE v.host IS NOT NULL")
        vnis = {vni for _, vni in _query(self.state.database,
                                         "SELECT cluster_id, vni FROM cluster_networks")}
        hosts = self.compute_hosts(self.stack)
        outs = await gatherResults([
            ensureDeferred(self._ssh({"address": h["address"]}, "ip -j -d link show"))
            for h in hosts])
        for host, out in zip(hosts, outs):
            devices = {n: d for n, d in parse_devices(out).items() if d.vni in vnis}
            want = {vni for h, vni in needed if h == host["name"]}
            self.assertEqual(sorted(devices),
                             sorted(f"comet{k}{v}" for v in want for k in "bv"), host["name"])
            for vni in want:
                vxlan = devices[f"cometv{vni}"]
                self.assertEqual((vxlan.kind, vxlan.master, vxlan.up),
                                 ("vxlan", f"cometb{vni}", True), host["name"])


for _case in (VolumeKillTests, VMKillTests, GuestKillTests, MigrateKillTests, FenceKillTests,
              NetKillTests):
    _case.generate()
del _case
