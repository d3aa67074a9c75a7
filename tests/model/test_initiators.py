"""Which initiator address a compute host's exports admit (L{comet.model.initiators})."""

from twisted.internet.defer import ensureDeferred, succeed
from twisted.trial.unittest import TestCase

from comet.config import ConfigError, HostConfig, parse
from comet.errors import Unavailable
from comet.model.initiators import Initiators


def _now(fn, *args):
    """Run the lookup at once (the daemon runs it in a thread)."""
    return succeed(fn(*args))


class InitiatorTests(TestCase):
    async def test_configured(self):
        hosts = [HostConfig(name="h", uri="qemu+ssh://root@h.example/system",
                            storage_address="10.1.2.3")]
        self.assertEqual(await Initiators(hosts, _now).address("h", "10.200.0.21"), "10.1.2.3")

    async def test_remote_host(self):
        """A remote libvirt URI: that machine's address."""
        hosts = [HostConfig(name="h", uri="qemu+ssh://root@192.0.2.7:2222/system")]
        self.assertEqual(await Initiators(hosts, _now).address("h", "10.200.0.21"), "192.0.2.7")

    async def test_local_host(self):
        """A local URI: the source address this machine's routing uses toward the server."""
        hosts = [HostConfig(name="h", uri="qemu:///system")]
        self.assertEqual(await Initiators(hosts, _now).address("h", "127.0.0.1"), "127.0.0.1")

    async def test_cannot_tell(self):
        """No route, no name: the export fails saying to set storage_address."""

        def unreachable(fn, *args):
            raise OSError("Network is unreachable")

        hosts = [HostConfig(name="h", uri="qemu:///system")]
        e = await self.assertFailure(
            ensureDeferred(Initiators(hosts, unreachable).address("h", "10.200.0.21")), Unavailable)
        self.assertIn("storage_address", str(e))

    def test_config(self):
        c = parse('[[hosts]]\nname = "h"\nuri = "qemu:///system"\nstorage_address = "10.200.0.1"\n')
        self.assertEqual(c.hosts[0].storage_address, "10.200.0.1")
        e = self.assertRaises(ConfigError, parse,
                              '[[hosts]]\nname = "h"\nuri = "qemu:///system"\nstorage_address = "h1"\n')
        self.assertIn("storage_address", str(e))
