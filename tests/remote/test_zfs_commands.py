"""
Tests for L{comet.remote.zfs_commands}: names, size rounding and the command
lines, exactly as OpenZFS expects them.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from comet.errors import InvalidInput
from comet.remote import zfs_commands, zfs_output
from tests.remote._captured import TOP, fixture


class RoundSizeTests(SynchronousTestCase):
    """L{zfs_commands.round_size} rounds up to whole volume blocks."""

    def test_exact(self):
        self.assertEqual(zfs_commands.round_size(16384), 16384)
        self.assertEqual(zfs_commands.round_size(10 * 1024 ** 3), 10 * 1024 ** 3)

    def test_up(self):
        self.assertEqual(zfs_commands.round_size(1), 16384)
        self.assertEqual(zfs_commands.round_size(16385), 32768)
        self.assertEqual(zfs_commands.round_size(1000, 4096), 4096)

    def test_invalid(self):
        for bad in (0, -1, 1.5, "1", True, None):
            self.assertRaises(InvalidInput, zfs_commands.round_size, bad)

    @given(st.integers(min_value=1, max_value=2 ** 60),
           st.sampled_from([512, 4096, 8192, 16384, 131072]))
    def test_property(self, size, block):
        """The result is the least multiple of the block size not below the size."""
        rounded = zfs_commands.round_size(size, block)
        self.assertEqual(rounded % block, 0)
        self.assertTrue(size <= rounded < size + block)

    def test_matches_real_zfs(self):
        """OpenZFS itself rounded a 1000-byte volume to 16384 (captured)."""
        values = zfs_output.parse_get(fixture("zfs-get-odd-volsize.out"))
        self.assertEqual(int(values[(f"{TOP}/odd", "volsize")][0]), zfs_commands.round_size(1000))


class NameTests(SynchronousTestCase):
    """Dataset, snapshot and property names are checked before they reach argv."""

    def test_datasets(self):
        for good in ("tank", "tank/comet", "tank/comet/web-1.disk_0"):
            self.assertEqual(zfs_commands.check_dataset(good), good)
        for bad in ("", "/tank", "tank/", "tank//a", "tank/a b", "tank/-V", "tank/a@b",
                    "tank/$(x)", "tank/a;b", "tank/.a", None, 3, "a" * 256):
            self.assertRaises(InvalidInput, zfs_commands.check_dataset, bad)

    def test_snapshots(self):
        self.assertEqual(zfs_commands.check_snapshot("tank/a@s1"), "tank/a@s1")
        for bad in ("tank/a", "tank/a@", "tank/a@s@t", "@s", "tank/a@-r", "tank/a@s 1"):
            self.assertRaises(InvalidInput, zfs_commands.check_snapshot, bad)

    def test_properties(self):
        self.assertEqual(zfs_commands.check_properties({"comet:vm": "a b=c"}), {"comet:vm": "a b=c"})
        for bad in ({"Comet": "x"}, {"a b": "x"}, {"comet:x": "a\tb"}, {"comet:x": "a\nb"},
                    {"comet:x": 1}, {"-o": "x"}):
            self.assertRaises(InvalidInput, zfs_commands.check_properties, bad)


class ArgvTests(SynchronousTestCase):
    """The command lines are exactly what OpenZFS expects."""

    def test_list_volumes(self):
        self.assertEqual(zfs_commands.list_volumes_argv("tank/comet"), [
            "zfs", "list", "-H", "-p", "-t", "volume", "-d", "1", "-o",
            "name,volsize,volblocksize,used,referenced,origin,creation,comet:owner",
            "tank/comet"])

    def test_list_snapshots(self):
        self.assertEqual(zfs_commands.list_snapshots_argv("tank/comet/v"), [
            "zfs", "list", "-H", "-p", "-t", "snapshot", "-d", "1", "-o",
            "name,createtxg,creation,used,referenced,comet:owner", "tank/comet/v"])

    def test_get(self):
        self.assertEqual(zfs_commands.get_argv(["tank/a", "tank/a@s"], ["used", "comet:owner"], True), [
            "zfs", "get", "-H", "-p", "-r", "-o", "name,property,value,source",
            "used,comet:owner", "tank/a", "tank/a@s"])

    def test_pool_list(self):
        self.assertEqual(zfs_commands.pool_list_argv(), [
            "zpool", "list", "-H", "-p", "-o", "name,size,allocated,free,health"])
        self.assertEqual(zfs_commands.pool_list_argv("tank")[-1], "tank")

    def test_create_volume(self):
        """Size rounded up, volblocksize explicit, properties as -o, sparse as -s."""
        self.assertEqual(
            zfs_commands.create_volume_argv("tank/c/v", 1000, {"comet:owner": "me"}, sparse=True),
            ["zfs", "create", "-s", "-V", "16384", "-o", "volblocksize=16384",
             "-o", "comet:owner=me", "tank/c/v"])

    def test_create_dataset(self):
        self.assertEqual(zfs_commands.create_dataset_argv("tank/c", {"comet:owner": "me"}), [
            "zfs", "create", "-o", "canmount=off", "-o", "mountpoint=none",
            "-o", "comet:owner=me", "tank/c"])

    def test_destroy(self):
        self.assertEqual(zfs_commands.destroy_argv("tank/a"), ["zfs", "destroy", "tank/a"])
        self.assertEqual(zfs_commands.destroy_argv("tank/a", True), ["zfs", "destroy", "-r", "tank/a"])
        self.assertEqual(zfs_commands.destroy_argv("tank/a@s"), ["zfs", "destroy", "tank/a@s"])

    def test_snapshot_atomic(self):
        """Several volumes go in one command, which ZFS carries out atomically."""
        self.assertEqual(zfs_commands.snapshot_argv(["tank/a", "tank/b"], "s1", {"comet:owner": "me"}), [
            "zfs", "snapshot", "-o", "comet:owner=me", "tank/a@s1", "tank/b@s1"])
        self.assertRaises(InvalidInput, zfs_commands.snapshot_argv, [], "s1")
        self.assertRaises(InvalidInput, zfs_commands.snapshot_argv, "tank/a", "s1")
        self.assertRaises(InvalidInput, zfs_commands.snapshot_argv, ["tank/a"], "s 1")

    def test_clone_promote_rollback_rename_set(self):
        self.assertEqual(zfs_commands.clone_argv("tank/a@s", "tank/b"), ["zfs", "clone", "tank/a@s", "tank/b"])
        self.assertEqual(zfs_commands.promote_argv("tank/b"), ["zfs", "promote", "tank/b"])
        self.assertEqual(zfs_commands.rollback_argv("tank/a@s"), ["zfs", "rollback", "tank/a@s"])
        self.assertEqual(zfs_commands.rollback_argv("tank/a@s", True), ["zfs", "rollback", "-r", "tank/a@s"])
        self.assertEqual(zfs_commands.rename_argv("tank/a", "tank/b"), ["zfs", "rename", "tank/a", "tank/b"])
        self.assertEqual(zfs_commands.rename_argv("tank/a@s", "tank/a@t"),
                         ["zfs", "rename", "tank/a@s", "tank/a@t"])
        self.assertRaises(InvalidInput, zfs_commands.rename_argv, "tank/a@s", "tank/b@s")
        self.assertEqual(zfs_commands.set_argv("tank/a", {"comet:x": "1", "comet:y": "2"}),
                         ["zfs", "set", "comet:x=1", "comet:y=2", "tank/a"])
        self.assertRaises(InvalidInput, zfs_commands.set_argv, "tank/a", {})

    def test_resize(self):
        """A whole positive size and a checked name; anything else runs nothing."""
        self.assertEqual(zfs_commands.resize_argv("tank/a", 2 << 30),
                         ["zfs", "set", "volsize=2147483648", "tank/a"])
        for size in (0, -1, True, 1.5, "2G"):
            self.assertRaises(InvalidInput, zfs_commands.resize_argv, "tank/a", size)
        self.assertRaises(InvalidInput, zfs_commands.resize_argv, "tank/a -o x", 1 << 30)

    def test_devices(self):
        """The volume name is a positional parameter of a constant script."""
        argv = zfs_commands.device_argv("tank/c/v", 5)
        self.assertEqual(argv, ["sh", "-c", zfs_commands.DEVICE_SCRIPT, "comet-zvol", "tank/c/v", "5"])
        self.assertNotIn("tank/c/v", zfs_commands.DEVICE_SCRIPT)
        self.assertEqual(zfs_commands.devices_argv(), ["sh", "-c", zfs_commands.DEVICES_SCRIPT, "comet-zvols"])
        self.assertRaises(InvalidInput, zfs_commands.device_argv, "tank/c/v", -1)

    def test_data(self):
        self.assertEqual(zfs_commands.write_argv("/dev/zd16"),
                         ["dd", "of=/dev/zd16", "bs=1M", "iflag=fullblock", "conv=fsync"])
        self.assertEqual(zfs_commands.read_argv("/dev/zd0", 10), ["head", "-c", "10", "/dev/zd0"])
        for bad in ("/dev/sda", "/dev/zd0;x", "zd0", "/dev/zd"):
            self.assertRaises(InvalidInput, zfs_commands.write_argv, bad)

    def test_decompressing_write(self):
        """A compressed image: a constant script, the tool and the device as its arguments."""
        self.assertEqual(zfs_commands.write_argv("/dev/zd16", "xz"),
                         ["sh", "-c", zfs_commands.DECOMPRESS_SCRIPT, "comet-write", "xz",
                          "/dev/zd16"])
        for bad in (("/dev/zd0", "bzip2"), ("/dev/zd0", "gzip; reboot"), ("/dev/sda", "gzip")):
            self.assertRaises(InvalidInput, zfs_commands.write_argv, *bad)
        self.assertEqual(zfs_commands.has_command_argv("qemu-img"),
                         ["sh", "-c", zfs_commands.HAS_COMMAND_SCRIPT, "comet-has", "qemu-img"])
        for bad in ("", "a b", "/bin/sh", "x;y", "-x", 5):
            self.assertRaises(InvalidInput, zfs_commands.has_command_argv, bad)

    def test_hostile_names_refused(self):
        """Names that a shell or zfs would read specially never become arguments."""
        for bad in ("tank/$(reboot)", "tank/a b", "-r", "tank/a\nb"):
            self.assertRaises(InvalidInput, zfs_commands.destroy_argv, bad)
            self.assertRaises(InvalidInput, zfs_commands.create_volume_argv, bad, 1)

    def test_send_receive(self):
        """
        A copy's two commands: whole or from an earlier snapshot of the same
        volume; a receive that never overwrites (no -F) and tags what it makes.
        """
        self.assertEqual(zfs_commands.send_argv("tank/c/v@s2"), ["zfs", "send", "tank/c/v@s2"])
        self.assertEqual(zfs_commands.send_argv("tank/c/v@s2", base="tank/c/v@s1"),
                         ["zfs", "send", "-i", "tank/c/v@s1", "tank/c/v@s2"])
        for snapshot, base in (("tank/c/v", None), ("tank/c/v@s2", "tank/c/w@s1"),
                               ("tank/c/v@s2", "tank/c/v@s2"), ("tank/c/v@s2", "-R"),
                               ("tank/c/v@s2", "tank/c/v@$(id)"), ("-R", None)):
            self.assertRaises(InvalidInput, zfs_commands.send_argv, snapshot, base)
        self.assertEqual(zfs_commands.receive_argv("tank/l/v", {"comet:owner": "c"}),
                         ["zfs", "receive", "-o", "comet:owner=c", "tank/l/v"])
        self.assertEqual(zfs_commands.receive_abort_argv("tank/l/v"),
                         ["zfs", "receive", "-A", "tank/l/v"])
        for bad in ("tank/l/v@s1", "-F", "tank/$(id)"):
            self.assertRaises(InvalidInput, zfs_commands.receive_argv, bad)
            self.assertRaises(InvalidInput, zfs_commands.receive_abort_argv, bad)
