"""Compute hosts as placement and C{GET /hosts} see them."""

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import TestCase

from comet.config import HostConfig
from comet.errors import Conflict, Unavailable
from comet.model.hosts import HostModel
from comet.model.operations.context import Context
from comet.model.operations.domains import place
from comet.store import VMRecord
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


class PlacedVMs:
    """The one call L{place} makes of the C{vms} table: a placement adds to the commitments."""

    def __init__(self, committed: dict[str, int], memory: dict[str, int]):
        self.committed = committed
        self.memory = memory
        self.placed: dict[str, str] = {}

    async def set_host(self, uuid: str, host: str):
        self.placed[uuid] = host
        self.committed[host] = self.committed.get(host, 0) + self.memory[uuid]
        return host


class ConcurrentPlacementTests(TestCase):
    """
    Concurrent starts (a cluster start) share the reads of the hosts' figures
    and still never give the same free memory to two VMs.
    """

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

    def place(self, vms: PlacedVMs, n: int, memory: int) -> list[Deferred]:
        ctx = Context(vms=vms, templates=None, hypervisors=self.hv, libvirt=self.hv,
                      hosts=self.hosts, tasks=None, clock=None)
        placements = []
        for i in range(n):
            vms.memory[f"u{i}"] = memory
            record = VMRecord(i, "c", f"vm{i}", f"u{i}", "t", memory, 1, None, "")
            placements.append(ensureDeferred(place(ctx, record)))
        return placements

    def answer_all(self, free: int) -> int:
        """Answer every read until none is asked; how many rounds there were."""
        rounds = 0
        while self.hv.asked:
            self.hv.answer(free=free)
            rounds += 1
        return rounds

    def test_reads_shared(self):
        """
        50 concurrent placements read each host twice (the read running when
        they arrived is too old for all but the first), not 50 times.
        """
        vms = PlacedVMs(self.committed, {})
        placements = self.place(vms, 50, 100)
        self.assertEqual(len(self.hv.asked), 2)  # one read of both hosts, begun by the first
        self.assertEqual(self.answer_all(free=8192), 2)
        for d in placements:
            self.successResultOf(d)
        self.assertEqual(len(vms.placed), 50)
        self.assertEqual(sum(self.committed.values()), 50 * 100)

    def test_read_after_asking(self):
        """
        A placement asked while a read runs waits for a read that began
        after it: it does not use the figures read before it asked.
        """
        vms = PlacedVMs(self.committed, {})
        first = self.place(vms, 1, 100)[0]
        second_ctx_placements = self.place(vms, 1, 100)  # same uuid u0 is fine: a new record
        self.hv.answer(free=8192)  # the first read: begun before the second asked
        self.successResultOf(first)
        self.assertNoResult(second_ctx_placements[0])
        self.assertEqual(len(self.hv.asked), 2)  # the second read, for the second placement
        self.hv.answer(free=8192)
        self.successResultOf(second_ctx_placements[0])

    def test_last_free_memory_once(self):
        """
        Two concurrent placements sharing one read of the figures: only one
        gets the last free memory; the other is refused (C{Conflict}),
        because each counts the placements made before it under the lock.
        """
        self.committed.update(a=8192, b=8192 - 3000)
        vms = PlacedVMs(self.committed, {})
        placements = self.place(vms, 2, 2000)
        self.answer_all(free=8192)
        results = []
        for d in placements:
            d.addBoth(results.append)
        self.assertEqual(vms.placed, {"u0": "b"})
        self.assertEqual(results[0], "b")
        results[1].trap(Conflict)

    def test_sequential_placements_read_again(self):
        """A placement that begins after another ended reads the hosts again."""
        vms = PlacedVMs(self.committed, {})
        for i in range(2):
            d = self.place(vms, 1, 100)[0]
            self.assertEqual(self.hv.answer(free=8192), 2)
            self.successResultOf(d)
