"""
The storage-server contract suite (C{tests/contract/remote_suite.py}) run
through the real L{comet.remote.SSHRunner} against the testbed's storage
servers: real OpenZFS 2.1 and tgt in storage VMs, reached over ssh with the
key and known_hosts file the testbed's C{comet.toml} names.

Skipped, with the reason, when the testbed is not up.  Each test works in a
dataset C{tank/comet-test-<token>} and under target names holding the same
token, and removes both.
"""

from __future__ import annotations

import shutil
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

    def makeRunner(self):
        stack = requireTestbed()
        servers = load(stack["comet_config"]).storageservers
        if len(servers) <= self.index:
            self.skipTest(f"the testbed has no storage server #{self.index + 1}")
        server = servers[self.index]
        self.pool = next(s["zpool"] for s in stack["servers"] if s["address"] == server.host)
        control = tempfile.mkdtemp(prefix="comet-ssh-", dir="/tmp")
        self.addCleanup(shutil.rmtree, control, True)
        self.server_address = server.host
        return SSHRunner(reactor, server, StorageConfig(
            connect_timeout=10, command_timeout=120.0, control_dir=control))

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
