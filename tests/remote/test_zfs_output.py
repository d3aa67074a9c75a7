"""
Tests for L{comet.remote.zfs_output}: the parsers, on real output captured
from the testbed's OpenZFS 2.1.11 (see C{data/manifest.json}).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from comet.remote import zfs_output
from tests.remote._captured import TOP, fixture

names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")


class ParserTests(SynchronousTestCase):
    """The parsers read real OpenZFS 2.1.11 output."""

    def test_volumes(self):
        volumes = {v.short_name: v for v in zfs_output.parse_volumes(fixture("zfs-list-volumes.out"))}
        self.assertEqual(sorted(volumes), ["c1", "foreign", "v1", "v2"])
        v1, v2, c1 = volumes["v1"], volumes["v2"], volumes["c1"]
        self.assertEqual((v1.size, v1.volblocksize, v1.origin, v1.owner),
                         (64 * 1024 * 1024, 16384, None, "capture"))
        self.assertGreater(v1.used, v1.size)  # thick, with snapshots
        self.assertEqual(v2.size, 33570816)  # 32 MiB + 1 byte, rounded up
        self.assertLess(v2.used, 1024 * 1024)  # sparse
        self.assertEqual(c1.origin, f"{TOP}/v1@s1")
        self.assertEqual(c1.dataset, TOP)
        self.assertGreater(c1.created, 1700000000)

    def test_one_volume(self):
        (volume,) = zfs_output.parse_volumes(fixture("zfs-list-volume.out"))
        self.assertEqual(volume.name, f"{TOP}/c1")

    def test_snapshots(self):
        s1, s2 = zfs_output.parse_snapshots(fixture("zfs-list-snapshots.out"))
        self.assertEqual((s1.volume, s1.snapname, s2.snapname), (f"{TOP}/v1", "s1", "s2"))
        self.assertLess(s1.createtxg, s2.createtxg)
        self.assertEqual(s1.owner, "capture")

    def test_snapshots_ordered_by_txg(self):
        """Snapshots come out oldest first whatever order the lines are in."""
        lines = fixture("zfs-list-snapshots.out").splitlines(keepends=True)
        self.assertEqual([s.snapname for s in zfs_output.parse_snapshots(b"".join(lines[::-1]))],
                         ["s1", "s2"])

    def test_get_owner(self):
        """Inherited values say where from; a snapshot's -o property is local."""
        values = zfs_output.parse_get(fixture("zfs-get-owner-recursive.out"))
        self.assertEqual(values[(f"{TOP}/v1", "comet:owner")], ("capture", "local"))
        self.assertEqual(values[(f"{TOP}/v1@s1", "comet:owner")], ("capture", "local"))
        self.assertEqual(values[(f"{TOP}/foreign", "comet:owner")],
                         ("capture", f"inherited from {TOP}"))

    def test_get_space(self):
        values = zfs_output.parse_get(fixture("zfs-get-space.out"))
        self.assertEqual(values[(TOP, "used")][1], None)  # "-": not a settable property
        self.assertGreater(int(values[(TOP, "available")][0]), 0)

    def test_pools(self):
        (pool,) = zfs_output.parse_pools(fixture("zpool-list.out"))
        self.assertEqual((pool.name, pool.health), ("tank", "ONLINE"))
        self.assertEqual(pool.allocated + pool.free, pool.size)

    def test_devices(self):
        devices = zfs_output.parse_devices(fixture("zvol-devices.out"))
        self.assertEqual(devices[f"{TOP}/v1"], "/dev/zd0")
        self.assertEqual(len(set(devices.values())), len(devices))

    def test_bad_output(self):
        self.assertRaises(zfs_output.ParseError, zfs_output.parse_volumes, b"tank/a\t1\n")
        self.assertRaises(zfs_output.ParseError, zfs_output.parse_pools, b"tank\tx\t1\t2\tONLINE\n")
        self.assertEqual(zfs_output.parse_volumes(b""), [])

    @given(st.lists(st.tuples(
        st.lists(names, min_size=1, max_size=3).map(lambda p: "tank/" + "/".join(p)),
        st.integers(1, 2 ** 50), st.sampled_from([4096, 16384]), st.integers(0, 2 ** 50),
        st.integers(0, 2 ** 50), st.none() | names.map(lambda n: f"tank/x@{n}"),
        st.integers(0, 2 ** 33), st.none() | names), max_size=8))
    def test_volumes_property(self, rows):
        """Whatever volumes zfs lists, the parser gives them back as they were."""
        text = "".join("\t".join("-" if v is None else str(v) for v in row) + "\n"
                       for row in rows)
        parsed = zfs_output.parse_volumes(text.encode())
        self.assertEqual([attrs_tuple(v) for v in parsed], rows)

    @given(st.lists(st.tuples(names, st.integers(0, 2 ** 62), st.integers(0, 2 ** 62),
                              st.sampled_from(["ONLINE", "DEGRADED", "FAULTED"])), max_size=5))
    def test_pools_property(self, rows):
        text = "".join(f"{n}\t{a + f}\t{a}\t{f}\t{h}\n" for n, a, f, h in rows)
        self.assertEqual([(p.name, p.allocated, p.free, p.health) for p in zfs_output.parse_pools(text)],
                         [(n, a, f, h) for n, a, f, h in rows])


def attrs_tuple(v: zfs_output.Volume) -> tuple:
    return (v.name, v.size, v.volblocksize, v.used, v.referenced, v.origin, v.created, v.owner)
