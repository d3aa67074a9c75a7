"""Compute hosts as placement and C{GET /hosts} see them."""

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import TestCase

from comet.config import HostConfig
from comet.errors import Unavailable
from comet.model.hosts import HostModel
from comet.virt import NodeInfo


class HeldHypervisors:
    """
    The two calls L{HostModel} makes of the libvirt adapter, answered when
    the test says: each C{node_info} is held until L{answer}.
    """

    def __init__(self):
        self.asked: list[tuple[str, Deferred]] = []
        self.reason = ""

    def node_info(self, host: str) -> Deferred:
        d: Deferred = Deferred()
        self.asked.append((host, d))
        return d

    def status(self, host: str):
        return type("Status", (), {"reason": self.reason})()

    def answer(self, free: int = 0, fail: str | None = None) -> int:
        """Answer every call held so far; how many there were."""
        held, self.asked = self.asked, []
        for host, d in held:
            if fail == host:
                d.errback(Unavailable(f"compute host {host!r} does not answer"))
            else:
                d.callback(NodeInfo(cpus=4, memory_mb=8192, memory_free_mb=free, domains=0,
                                    running=0))
        return len(held)


class HostModelTests(TestCase):
    def setUp(self):
        self.hv = HeldHypervisors()
        self.committed = {"a": 0, "b": 0}

        async def committed():
            return dict(self.committed)

        self.hosts = HostModel(
            self.hv,
            [HostConfig("a", "qemu+ssh://a/system", "kvm"), HostConfig("b", "test:///b", "test")],
            committed,
        )

    def candidates(self) -> Deferred:
        return ensureDeferred(self.hosts.candidates())

    def test_reads_live(self):
        """Every placement asks every host again (all at once)."""
        for _ in range(2):
            d = self.candidates()
            self.assertEqual(self.hv.answer(free=4096), 2)
            self.assertEqual([c.name for c in self.successResultOf(d)], ["a", "b"])

    def test_commitments(self):
        """
        Free memory is the kernel's figure capped by what Comet's placed VMs
        were given ('a'); the test driver's made-up figure is not used at
        all ('b').
        """
        self.committed["a"] = 8000
        d = self.candidates()
        self.hv.answer(free=4096)
        self.assertEqual([(c.name, c.free) for c in self.successResultOf(d)],
                         [("a", 192), ("b", 8192)])

    def test_unreachable_host_left_out(self):
        """A host whose read failed is not a candidate."""
        d = self.candidates()
        self.hv.answer(free=4096, fail="b")
        self.assertEqual([c.name for c in self.successResultOf(d)], ["a"])

    def test_list_says_why_unreachable(self):
        """C{list} (C{GET /hosts}) reads live and names why a host is unreachable."""
        self.hv.reason = "connection refused"
        d = ensureDeferred(self.hosts.list())
        self.hv.answer(free=4096, fail="b")
        a, b = self.successResultOf(d)
        self.assertEqual((a.state, a.memory_free), ("connected", 4096))
        self.assertEqual((b.state, b.reason), ("unreachable", "connection refused"))
