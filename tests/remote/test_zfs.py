"""
Tests for L{comet.remote.zfs}: command lines, parsers (on real output
captured from the testbed's OpenZFS 2.1.11, see C{data/manifest.json}), size
rounding, error translation, and the L{ZFS} API over a L{FakeRunner}.
"""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from comet.errors import CommandFailed, Conflict, InvalidInput, NotFound
from comet.remote import FakeRunner, FakeStorageServer
from comet.remote import zfs

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
TOP = "tank/comet-test-capture"


def fixture(name: str) -> bytes:
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")


class RoundSizeTests(SynchronousTestCase):
    """L{zfs.round_size} rounds up to whole volume blocks."""

    def test_exact(self):
        self.assertEqual(zfs.round_size(16384), 16384)
        self.assertEqual(zfs.round_size(10 * 1024 ** 3), 10 * 1024 ** 3)

    def test_up(self):
        self.assertEqual(zfs.round_size(1), 16384)
        self.assertEqual(zfs.round_size(16385), 32768)
        self.assertEqual(zfs.round_size(1000, 4096), 4096)

    def test_invalid(self):
        for bad in (0, -1, 1.5, "1", True, None):
            self.assertRaises(InvalidInput, zfs.round_size, bad)

    @given(st.integers(min_value=1, max_value=2 ** 60),
           st.sampled_from([512, 4096, 8192, 16384, 131072]))
    def test_property(self, size, block):
        """The result is the least multiple of the block size not below the size."""
        rounded = zfs.round_size(size, block)
        self.assertEqual(rounded % block, 0)
        self.assertTrue(size <= rounded < size + block)

    def test_matches_real_zfs(self):
        """OpenZFS itself rounded a 1000-byte volume to 16384 (captured)."""
        values = zfs.parse_get(fixture("zfs-get-odd-volsize.out"))
        self.assertEqual(int(values[(f"{TOP}/odd", "volsize")][0]), zfs.round_size(1000))


class NameTests(SynchronousTestCase):
    """Dataset, snapshot and property names are checked before they reach argv."""

    def test_datasets(self):
        for good in ("tank", "tank/comet", "tank/comet/web-1.disk_0"):
            self.assertEqual(zfs.check_dataset(good), good)
        for bad in ("", "/tank", "tank/", "tank//a", "tank/a b", "tank/-V", "tank/a@b",
                    "tank/$(x)", "tank/a;b", "tank/.a", None, 3, "a" * 256):
            self.assertRaises(InvalidInput, zfs.check_dataset, bad)

    def test_snapshots(self):
        self.assertEqual(zfs.check_snapshot("tank/a@s1"), "tank/a@s1")
        for bad in ("tank/a", "tank/a@", "tank/a@s@t", "@s", "tank/a@-r", "tank/a@s 1"):
            self.assertRaises(InvalidInput, zfs.check_snapshot, bad)

    def test_properties(self):
        self.assertEqual(zfs.check_properties({"comet:vm": "a b=c"}), {"comet:vm": "a b=c"})
        for bad in ({"Comet": "x"}, {"a b": "x"}, {"comet:x": "a\tb"}, {"comet:x": "a\nb"},
                    {"comet:x": 1}, {"-o": "x"}):
            self.assertRaises(InvalidInput, zfs.check_properties, bad)


class ArgvTests(SynchronousTestCase):
    """The command lines are exactly what OpenZFS expects."""

    def test_list_volumes(self):
        self.assertEqual(zfs.list_volumes_argv("tank/comet"), [
            "zfs", "list", "-H", "-p", "-t", "volume", "-d", "1", "-o",
            "name,volsize,volblocksize,used,referenced,origin,creation,comet:owner",
            "tank/comet"])

    def test_list_snapshots(self):
        self.assertEqual(zfs.list_snapshots_argv("tank/comet/v"), [
            "zfs", "list", "-H", "-p", "-t", "snapshot", "-d", "1", "-o",
            "name,createtxg,creation,used,referenced,comet:owner", "tank/comet/v"])

    def test_get(self):
        self.assertEqual(zfs.get_argv(["tank/a", "tank/a@s"], ["used", "comet:owner"], True), [
            "zfs", "get", "-H", "-p", "-r", "-o", "name,property,value,source",
            "used,comet:owner", "tank/a", "tank/a@s"])

    def test_pool_list(self):
        self.assertEqual(zfs.pool_list_argv(), [
            "zpool", "list", "-H", "-p", "-o", "name,size,allocated,free,health"])
        self.assertEqual(zfs.pool_list_argv("tank")[-1], "tank")

    def test_create_volume(self):
        """Size rounded up, volblocksize explicit, properties as -o, sparse as -s."""
        self.assertEqual(
            zfs.create_volume_argv("tank/c/v", 1000, {"comet:owner": "me"}, sparse=True),
            ["zfs", "create", "-s", "-V", "16384", "-o", "volblocksize=16384",
             "-o", "comet:owner=me", "tank/c/v"])

    def test_create_dataset(self):
        self.assertEqual(zfs.create_dataset_argv("tank/c", {"comet:owner": "me"}), [
            "zfs", "create", "-o", "canmount=off", "-o", "mountpoint=none",
            "-o", "comet:owner=me", "tank/c"])

    def test_destroy(self):
        self.assertEqual(zfs.destroy_argv("tank/a"), ["zfs", "destroy", "tank/a"])
        self.assertEqual(zfs.destroy_argv("tank/a", True), ["zfs", "destroy", "-r", "tank/a"])
        self.assertEqual(zfs.destroy_argv("tank/a@s"), ["zfs", "destroy", "tank/a@s"])

    def test_snapshot_atomic(self):
        """Several volumes go in one command, which ZFS carries out atomically."""
        self.assertEqual(zfs.snapshot_argv(["tank/a", "tank/b"], "s1", {"comet:owner": "me"}), [
            "zfs", "snapshot", "-o", "comet:owner=me", "tank/a@s1", "tank/b@s1"])
        self.assertRaises(InvalidInput, zfs.snapshot_argv, [], "s1")
        self.assertRaises(InvalidInput, zfs.snapshot_argv, "tank/a", "s1")
        self.assertRaises(InvalidInput, zfs.snapshot_argv, ["tank/a"], "s 1")

    def test_clone_promote_rollback_rename_set(self):
        self.assertEqual(zfs.clone_argv("tank/a@s", "tank/b"), ["zfs", "clone", "tank/a@s", "tank/b"])
        self.assertEqual(zfs.promote_argv("tank/b"), ["zfs", "promote", "tank/b"])
        self.assertEqual(zfs.rollback_argv("tank/a@s"), ["zfs", "rollback", "tank/a@s"])
        self.assertEqual(zfs.rollback_argv("tank/a@s", True), ["zfs", "rollback", "-r", "tank/a@s"])
        self.assertEqual(zfs.rename_argv("tank/a", "tank/b"), ["zfs", "rename", "tank/a", "tank/b"])
        self.assertEqual(zfs.rename_argv("tank/a@s", "tank/a@t"),
                         ["zfs", "rename", "tank/a@s", "tank/a@t"])
        self.assertRaises(InvalidInput, zfs.rename_argv, "tank/a@s", "tank/b@s")
        self.assertEqual(zfs.set_argv("tank/a", {"comet:x": "1", "comet:y": "2"}),
                         ["zfs", "set", "comet:x=1", "comet:y=2", "tank/a"])
        self.assertRaises(InvalidInput, zfs.set_argv, "tank/a", {})

    def test_devices(self):
        """The volume name is a positional parameter of a constant script."""
        argv = zfs.device_argv("tank/c/v", 5)
        self.assertEqual(argv, ["sh", "-c", zfs.DEVICE_SCRIPT, "comet-zvol", "tank/c/v", "5"])
        self.assertNotIn("tank/c/v", zfs.DEVICE_SCRIPT)
        self.assertEqual(zfs.devices_argv(), ["sh", "-c", zfs.DEVICES_SCRIPT, "comet-zvols"])
        self.assertRaises(InvalidInput, zfs.device_argv, "tank/c/v", -1)

    def test_data(self):
        self.assertEqual(zfs.write_argv("/dev/zd16"),
                         ["dd", "of=/dev/zd16", "bs=1M", "iflag=fullblock", "conv=fsync"])
        self.assertEqual(zfs.read_argv("/dev/zd0", 10), ["head", "-c", "10", "/dev/zd0"])
        for bad in ("/dev/sda", "/dev/zd0;x", "zd0", "/dev/zd"):
            self.assertRaises(InvalidInput, zfs.write_argv, bad)

    def test_hostile_names_refused(self):
        """Names that a shell or zfs would read specially never become arguments."""
        for bad in ("tank/$(reboot)", "tank/a b", "-r", "tank/a\nb"):
            self.assertRaises(InvalidInput, zfs.destroy_argv, bad)
            self.assertRaises(InvalidInput, zfs.create_volume_argv, bad, 1)


class ParserTests(SynchronousTestCase):
    """The parsers read real OpenZFS 2.1.11 output."""

    def test_volumes(self):
        volumes = {v.short_name: v for v in zfs.parse_volumes(fixture("zfs-list-volumes.out"))}
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
        (volume,) = zfs.parse_volumes(fixture("zfs-list-volume.out"))
        self.assertEqual(volume.name, f"{TOP}/c1")

    def test_snapshots(self):
        s1, s2 = zfs.parse_snapshots(fixture("zfs-list-snapshots.out"))
        self.assertEqual((s1.volume, s1.snapname, s2.snapname), (f"{TOP}/v1", "s1", "s2"))
        self.assertLess(s1.createtxg, s2.createtxg)
        self.assertEqual(s1.owner, "capture")

    def test_snapshots_ordered_by_txg(self):
        """Snapshots come out oldest first whatever order the lines are in."""
        lines = fixture("zfs-list-snapshots.out").splitlines(keepends=True)
        self.assertEqual([s.snapname for s in zfs.parse_snapshots(b"".join(lines[::-1]))],
                         ["s1", "s2"])

    def test_get_owner(self):
        """Inherited values say where from; a snapshot's -o property is local."""
        values = zfs.parse_get(fixture("zfs-get-owner-recursive.out"))
        self.assertEqual(values[(f"{TOP}/v1", "comet:owner")], ("capture", "local"))
        self.assertEqual(values[(f"{TOP}/v1@s1", "comet:owner")], ("capture", "local"))
        self.assertEqual(values[(f"{TOP}/foreign", "comet:owner")],
                         ("capture", f"inherited from {TOP}"))

    def test_get_space(self):
        values = zfs.parse_get(fixture("zfs-get-space.out"))
        self.assertEqual(values[(TOP, "used")][1], None)  # "-": not a settable property
        self.assertGreater(int(values[(TOP, "available")][0]), 0)

    def test_pools(self):
        (pool,) = zfs.parse_pools(fixture("zpool-list.out"))
        self.assertEqual((pool.name, pool.health), ("tank", "ONLINE"))
        self.assertEqual(pool.allocated + pool.free, pool.size)

    def test_devices(self):
        devices = zfs.parse_devices(fixture("zvol-devices.out"))
        self.assertEqual(devices[f"{TOP}/v1"], "/dev/zd0")
        self.assertEqual(len(set(devices.values())), len(devices))

    def test_bad_output(self):
        self.assertRaises(zfs.ParseError, zfs.parse_volumes, b"tank/a\t1\n")
        self.assertRaises(zfs.ParseError, zfs.parse_pools, b"tank\tx\t1\t2\tONLINE\n")
        self.assertEqual(zfs.parse_volumes(b""), [])

    @given(st.lists(st.tuples(
        st.lists(names, min_size=1, max_size=3).map(lambda p: "tank/" + "/".join(p)),
        st.integers(1, 2 ** 50), st.sampled_from([4096, 16384]), st.integers(0, 2 ** 50),
        st.integers(0, 2 ** 50), st.none() | names.map(lambda n: f"tank/x@{n}"),
        st.integers(0, 2 ** 33), st.none() | names), max_size=8))
    def test_volumes_property(self, rows):
        """Whatever volumes zfs lists, the parser gives them back as they were."""
        text = "".join("\t".join("-" if v is None else str(v) for v in row) + "\n"
                       for row in rows)
        parsed = zfs.parse_volumes(text.encode())
        self.assertEqual([attrs_tuple(v) for v in parsed], rows)

    @given(st.lists(st.tuples(names, st.integers(0, 2 ** 62), st.integers(0, 2 ** 62),
                              st.sampled_from(["ONLINE", "DEGRADED", "FAULTED"])), max_size=5))
    def test_pools_property(self, rows):
        text = "".join(f"{n}\t{a + f}\t{a}\t{f}\t{h}\n" for n, a, f, h in rows)
        self.assertEqual([(p.name, p.allocated, p.free, p.health) for p in zfs.parse_pools(text)],
                         [(n, a, f, h) for n, a, f, h in rows])


def attrs_tuple(v: zfs.Volume) -> tuple:
    return (v.name, v.size, v.volblocksize, v.used, v.referenced, v.origin, v.created, v.owner)


class TranslateTests(SynchronousTestCase):
    """ZFS's real error messages become the domain's errors."""

    cases = {
        "zfs-create-exists.err": Conflict,
        "zfs-create-no-parent.err": NotFound,
        "zfs-create-no-space.err": Conflict,
        "zfs-list-missing.err": NotFound,
        "zfs-destroy-children.err": Conflict,
        "zfs-destroy-clones.err": Conflict,
        "zfs-destroy-recursive-clones.err": Conflict,
        "zfs-destroy-missing.err": NotFound,
        "zfs-snapshot-exists.err": Conflict,
        "zfs-snapshot-missing.err": NotFound,
        "zfs-rollback-newer.err": Conflict,
        "zfs-promote-not-clone.err": Conflict,
        "zfs-rename-exists.err": Conflict,
        "zfs-clone-missing.err": NotFound,
    }

    def test_real_messages(self):
        from twisted.python.failure import Failure

        for name, kind in self.cases.items():
            stderr = fixture(name).decode().strip()
            error = CommandFailed(["zfs"], 1, stderr, "10.200.0.21")
            with self.assertRaises(kind) as caught:
                zfs.translate(Failure(error))
            self.assertEqual(caught.exception.reason,
                             stderr.splitlines()[0] + " (on 10.200.0.21)")

    def test_other_failures_unchanged(self):
        from twisted.python.failure import Failure

        failure = Failure(CommandFailed(["zfs"], 1, "internal error: Bad file descriptor"))
        self.assertIs(zfs.translate(failure), failure)


class ZFSTests(TestCase):
    """L{zfs.ZFS} over a fake runner: what it runs and what it refuses."""

    def setUp(self):
        self.server = FakeStorageServer()
        self.runner = FakeRunner(self.server, host="10.200.0.21")
        self.zfs = zfs.ZFS(self.runner, owner="me")

    @inlineCallbacks
    def test_create_runs(self):
        """Creating a volume runs one zfs create, tagged, then reads the volume back."""
        yield self.zfs.create_volume("tank/comet", "v", 1)
        self.assertEqual(self.runner.ran, [
            ["zfs", "create", "-V", "16384", "-o", "volblocksize=16384",
             "-o", "comet:owner=me", "tank/comet/v"],
            zfs.get_volume_argv("tank/comet/v"),
        ])

    @inlineCallbacks
    def test_bad_input_runs_nothing(self):
        """Invalid names and sizes are refused before any command runs."""
        for call in (
            lambda: self.zfs.create_volume("tank/comet", "a b", 1),
            lambda: self.zfs.create_volume("tank/comet", "v", 0),
            lambda: self.zfs.create_volume("tank/co met", "v", 1),
            lambda: self.zfs.create_volume("tank/comet", "v", 1, {"comet:x": "a\nb"}),
            lambda: self.zfs.snapshot(["tank/comet/v"], "$(x)"),
            lambda: self.zfs.clone("tank/comet/v@s", "tank/comet", "-x"),
            lambda: self.zfs.set_properties("tank/comet/v", {"comet:owner": "other"}),
            lambda: self.zfs.rename("tank/comet/v", "tank/comet/v w"),
        ):
            try:
                d = call()
            except InvalidInput:
                continue
            yield self.assertFailure(d, InvalidInput)
        self.assertEqual(self.runner.calls, [])

    @inlineCallbacks
    def test_destroy_checks_owner_first(self):
        """Destroying something not Comet's runs no zfs destroy at all."""
        other = zfs.ZFS(self.runner, owner="other")
        yield other.create_volume("tank/comet", "v", 1)
        del self.runner.calls[:]
        yield self.assertFailure(self.zfs.destroy("tank/comet/v"), Conflict)
        self.assertEqual([argv[:2] for argv in self.runner.ran], [["zfs", "get"]])

    @inlineCallbacks
    def test_device_of_resolves_each_time(self):
        """The device is asked for anew on every call, never cached."""
        yield self.zfs.create_volume("tank/comet", "a", 1)
        first = yield self.zfs.device_of("tank/comet/a")
        self.server.reimport()
        second = yield self.zfs.device_of("tank/comet/a")
        self.assertNotEqual(first, second)
        self.assertEqual(second, self.server.device("tank/comet/a"))

    @inlineCallbacks
    def test_device_missing_is_not_found(self):
        """A volume whose device never appears is reported as not found."""
        yield self.zfs.create_volume("tank/comet", "a", 1)
        del self.server.devices["tank/comet/a"]
        yield self.assertFailure(self.zfs.device_of("tank/comet/a"), NotFound)

    @inlineCallbacks
    def test_device_script_missing_zvol_id(self):
        """If the server lacks zvol_id, the failure says so (it is not 'not found')."""
        yield self.zfs.create_volume("tank/comet", "a", 1)
        self.runner.answer(zfs.device_argv("tank/comet/a"), code=127,
                           stderr="zvol_id not found (OpenZFS zfsutils: /lib/udev/zvol_id)")
        with self.assertRaises(CommandFailed) as caught:
            yield self.zfs.device_of("tank/comet/a")
        self.assertIn("zvol_id", caught.exception.stderr)

    @inlineCallbacks
    def test_recorded_answers(self):
        """The API reads real recorded output through a recording-only fake."""
        runner = FakeRunner()
        runner.answer_from_file(zfs.list_volumes_argv(TOP), os.path.join(DATA, "zfs-list-volumes.out"))
        runner.answer_from_file(zfs.list_volumes_argv(TOP + "/nope"),
                                os.path.join(DATA, "zfs-list-missing.err"), code=1)
        volumes = yield zfs.ZFS(runner).list_volumes(TOP)
        self.assertEqual(len(volumes), 4)
        yield self.assertFailure(zfs.ZFS(runner).list_volumes(TOP + "/nope"), NotFound)
