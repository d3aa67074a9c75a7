"""Two in-memory storage servers, for tests of copies between ZFS machines."""

from __future__ import annotations

import os

from twisted.internet.defer import inlineCallbacks

from comet.remote import FakeRunner, FakeStorageServer
from comet.remote.zfs import ZFS
from tests.contract.send_suite import MiB, OWNER


class FakePair:
    """
    Mixin for a L{twisted.trial.unittest.TestCase}: a source and a
    destination fake server, their runners and L{ZFS} adapters (C{OWNER}'s).
    """

    def setUp(self):
        self.servers = FakeStorageServer(), FakeStorageServer()
        self.source = FakeRunner(self.servers[0], host="10.200.0.98")
        self.dest = FakeRunner(self.servers[1], host="10.200.0.99")
        self.zfs = ZFS(self.source, owner=OWNER)
        self.other = ZFS(self.dest, owner=OWNER)

    @inlineCallbacks
    def written_volume(self):
        """Volume C{tank/comet/v1} (1 MiB) on the source, its first 64 KiB random; its name."""
        volume = yield self.zfs.create_volume("tank/comet", "v1", MiB)
        yield self.source.run(["dd", f"of={self.servers[0].device(volume.name)}"],
                              stdin=os.urandom(65536))
        return volume.name
