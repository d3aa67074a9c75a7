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
