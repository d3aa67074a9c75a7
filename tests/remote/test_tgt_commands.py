"""
Tests for L{comet.remote.tgt_commands}: target names and the command lines.
"""

from __future__ import annotations

import datetime

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from comet.errors import InvalidInput
from comet.remote import tgt_commands
from tests.remote._captured import fixture

NOV = datetime.date(2026, 11, 27)


class IQNTests(SynchronousTestCase):
    """L{tgt_commands.iqn} names a volume's target."""

    def test_format(self):
        self.assertEqual(tgt_commands.iqn("org.comet", "vmpool", "web-1", NOV),
                         "iqn.2026-11.org.comet:vmpool.web-1")

    def test_date_injected(self):
        self.assertEqual(tgt_commands.iqn("org.comet", "p", "v", datetime.date(2025, 1, 31)),
                         "iqn.2025-01.org.comet:p.v")

    def test_lowercase(self):
        self.assertEqual(tgt_commands.iqn("Org.Comet", "VMPool", "Web-1", NOV),
                         "iqn.2026-11.org.comet:vmpool.web-1")

    def test_underscore(self):
        """tgt refuses '_' in target names (captured), so it becomes '-'."""
        self.assertIn("invalid request", fixture("tgt-new-underscore.err").decode())
        self.assertEqual(tgt_commands.iqn("org.comet", "my_pool", "db_2", NOV),
                         "iqn.2026-11.org.comet:my-pool.db-2")

    def test_invalid(self):
        for args in (("org.comet", "a b", "v"), ("org.comet", "p", "$(x)"),
                     ("org..comet", "p", "v"), ("-org", "p", "v"), ("org.comet", "p", "")):
            self.assertRaises(InvalidInput, tgt_commands.iqn, *args, NOV)

    @given(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"),
           st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"),
           st.dates(datetime.date(2000, 1, 1), datetime.date(2099, 12, 31)))
    def test_always_valid(self, pool, volume, today):
        """Any valid pool and volume name gives a name tgt accepts."""
        name = tgt_commands.iqn("org.comet", pool, volume, today)
        self.assertEqual(tgt_commands.check_iqn(name), name)
        self.assertEqual(name, name.lower())
        self.assertNotIn("_", name)


class ArgvTests(SynchronousTestCase):
    """The tgtadm command lines."""

    def test_show(self):
        self.assertEqual(tgt_commands.show_argv(),
                         ["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show"])
        self.assertEqual(tgt_commands.accounts_argv()[-4:], ["--mode", "account", "--op", "show"])

    def test_target(self):
        name = "iqn.2026-11.org.comet:p.v"
        self.assertEqual(tgt_commands.new_target_argv(3, name), [
            "tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "new", "--tid", "3",
            "--targetname", name])
        self.assertEqual(tgt_commands.delete_target_argv(3), [
            "tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "delete", "--force",
            "--tid", "3"])
        for bad in (0, -1, "1", True):
            self.assertRaises(InvalidInput, tgt_commands.new_target_argv, bad, name)
        self.assertRaises(InvalidInput, tgt_commands.new_target_argv, 1, "iqn.x;reboot")

    def test_lun(self):
        self.assertEqual(tgt_commands.new_lun_argv(3, 1, "/dev/zd16"), [
            "tgtadm", "--lld", "iscsi", "--mode", "logicalunit", "--op", "new", "--tid", "3",
            "--lun", "1", "--backing-store", "/dev/zd16"])
        self.assertRaises(InvalidInput, tgt_commands.new_lun_argv, 3, 1, "/dev/zd0 /etc/passwd")

    def test_bind(self):
        self.assertEqual(tgt_commands.bind_address_argv(3)[-2:], ["--initiator-address", "ALL"])
        self.assertEqual(tgt_commands.bind_address_argv(3, "10.200.0.0/24")[-1], "10.200.0.0/24")
        self.assertRaises(InvalidInput, tgt_commands.bind_address_argv, 3, "host name")
        self.assertEqual(tgt_commands.bind_account_argv(3, "u1"), [
            "tgtadm", "--lld", "iscsi", "--mode", "account", "--op", "bind", "--tid", "3",
            "--user", "u1"])

    def test_account(self):
        """The password is not an argument: the script reads it from stdin."""
        self.assertEqual(tgt_commands.new_account_argv("u1"),
                         ["sh", "-c", tgt_commands.NEW_ACCOUNT_SCRIPT, "comet-chap", "u1"])
        self.assertEqual(tgt_commands.delete_account_argv("u1")[-4:], ["--op", "delete", "--user", "u1"])
        self.assertRaises(InvalidInput, tgt_commands.new_account_argv, "u 1")

    def test_password_rule(self):
        self.assertEqual(tgt_commands.check_password("twelve-chars"), "twelve-chars")
        for bad in ("short", "with space here", "new\nline-in-it", "x" * 256, None):
            self.assertRaises(InvalidInput, tgt_commands.check_password, bad)
