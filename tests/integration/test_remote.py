"""
The storage-server contract suite (C{tests/contract/remote_suite.py}) run
through the real L{comet.remote.SSHRunner} against the testbed's storage
servers: real OpenZFS 2.1 and tgt in storage VMs, reached over ssh with the
key and known_hosts file the testbed's C{comet.toml} names.

Skipped, with the reason, when the testbed is not up.  Each test works in a
dataset C{tank/comet-test-<token>} and under target names holding the same
token, and removes both.

The tests of one server share one L{SSHRunner}, so one ssh connection (its
ControlMaster), as the daemon does for its whole life: a new connection per
test cost an ssh handshake with the TCG-emulated storage VM each time (2 to 9 s,
the storage VM's sshd doing the key exchange in emulation), about a third of
this module's time.

L{SendBetweenServersTests} runs the send contract suite
(C{tests/contract/send_suite.py}) from the first server to the second: real
C{zfs send} and C{zfs receive}, the stream pumped through Comet.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from comet.config import StorageConfig, load
from comet.remote import SSHRunner
from tests.contract.remote_suite import RemoteContractMixin
from tests.contract.send_suite import SendContractMixin
from tests.integration._testbed import requireTestbed


class _RealServer(RemoteContractMixin):
    #: Which storage server of the testbed's configuration (0 or 1).
    index = 0

    #: The runner the class's tests share, made by the first (L{makeRunner}),
    #: and its ControlMaster's directory.
    shared: SSHRunner | None = None
    control: str | None = None

    @classmethod
    def setUpClass(cls):
        cls.shared = cls.control = None

    @classmethod
    def tearDownClass(cls):
        """Close the shared connection (its master) and remove its directory."""
        if cls.shared is not None:
            subprocess.run(cls.shared.ssh_argv("-O", "exit"), capture_output=True, timeout=30)
        if cls.control is not None:
            shutil.rmtree(cls.control, True)
        cls.shared = cls.control = None

    def makeRunner(self):
        stack = requireTestbed()
        servers = load(stack["comet_config"]).storageservers
        if len(servers) <= self.index:
            self.skipTest(f"the testbed has no storage server #{self.index + 1}")
        server = servers[self.index]
        self.pool = next(s["zpool"] for s in stack["servers"] if s["address"] == server.host)
        self.server_address = server.host
        cls = type(self)
        if cls.shared is None:
            cls.control = tempfile.mkdtemp(prefix="comet-ssh-", dir="/tmp")
            cls.shared = SSHRunner(reactor, server, StorageConfig(
                connect_timeout=10, command_timeout=120.0, control_dir=cls.control))
        return cls.shared

    def releaseRunner(self):
        """Keep the shared runner for the next test, idle: nothing of this test still runs."""
        self.assertEqual(self.runner.in_flight, 0)

    async def login(self, iqn, chap):
        """
        A real iSCSI login from this machine (the testbed's bridge address,
        10.200.0.1: the suite's initiator_address) with QEMU's own initiator
        (libiscsi, what the VMs use): C{qemu-img info} of LUN 1.
        """
        from urllib.parse import quote

        from twisted.internet.utils import getProcessOutputAndValue

        user, secret = (quote(part, safe="") for part in chap)
        url = f"iscsi://{user}%{secret}@{self.server_address}/{iqn}/1"
        out, err, code = await getProcessOutputAndValue(
            "/usr/bin/qemu-img", ["info", url], env={"PATH": "/usr/bin:/bin"})
        return code == 0


class StorageServer1Tests(_RealServer, TestCase):
    """The first testbed storage server (10.200.0.21) meets the contract."""

    index = 0


class StorageServer2Tests(_RealServer, TestCase):
    """The second testbed storage server (10.200.0.22) meets the contract."""

    index = 1


class SendBetweenServersTests(SendContractMixin, TestCase):
    """
    A zvol copied from the first testbed storage server to the second, whole
    and incrementally, meets the send contract: the data path of
    local-copy mode, between two real OpenZFS machines.
    """

    runners: tuple[SSHRunner, SSHRunner] | None = None
    controls: list[str] = []

    @classmethod
    def setUpClass(cls):
        cls.runners, cls.controls = None, []

    @classmethod
    def tearDownClass(cls):
        """Close both shared connections (their masters) and remove their directories."""
        for runner in cls.runners or ():
            subprocess.run(runner.ssh_argv("-O", "exit"), capture_output=True, timeout=30)
        for control in cls.controls:
            shutil.rmtree(control, True)
        cls.runners, cls.controls = None, []

    def makeRunners(self):
        stack = requireTestbed()
        servers = load(stack["comet_config"]).storageservers
        if len(servers) < 2:
            self.skipTest("the testbed has one storage server; a copy needs two")
        self.pools = tuple(next(s["zpool"] for s in stack["servers"] if s["address"] == server.host)
                           for server in servers[:2])
        cls = type(self)
        if cls.runners is None:
            cls.controls = [tempfile.mkdtemp(prefix="comet-ssh-", dir="/tmp") for _ in range(2)]
            cls.runners = tuple(
                SSHRunner(reactor, server, StorageConfig(
                    connect_timeout=10, command_timeout=120.0, control_dir=control))
                for server, control in zip(servers[:2], cls.controls))
        return cls.runners

    def releaseRunners(self):
        """Keep the shared runners for the next test, idle: nothing of this test still runs."""
        self.assertEqual((self.source.in_flight, self.dest.in_flight), (0, 0))
