"""
Tests for L{comet.remote.tgt}: target names, command lines, the parser of
C{tgtadm --op show} (on real tgt 1.0.85 output, see C{data/manifest.json}),
error translation, and the L{TGT} API over a L{FakeRunner}.
"""

from __future__ import annotations

import datetime
import os

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from comet.errors import CommandFailed, Conflict, InvalidInput, NotFound, Unavailable
from comet.remote import FakeRunner, FakeStorageServer
from comet.remote import tgt
from comet.remote.zfs import ZFS

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
NOV = datetime.date(2026, 11, 27)


def fixture(name: str) -> bytes:
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


class IQNTests(SynchronousTestCase):
    """L{tgt.iqn} names a volume's target."""

    def test_format(self):
        self.assertEqual(tgt.iqn("org.comet", "vmpool", "web-1", NOV),
                         "iqn.2026-11.org.comet:vmpool.web-1")

    def test_date_injected(self):
        self.assertEqual(tgt.iqn("org.comet", "p", "v", datetime.date(2025, 1, 31)),
                         "iqn.2025-01.org.comet:p.v")

    def test_lowercase(self):
        self.assertEqual(tgt.iqn("Org.Comet", "VMPool", "Web-1", NOV),
                         "iqn.2026-11.org.comet:vmpool.web-1")

    def test_underscore(self):
        """tgt refuses '_' in target names (captured), so it becomes '-'."""
        self.assertIn("invalid request", fixture("tgt-new-underscore.err").decode())
        self.assertEqual(tgt.iqn("org.comet", "my_pool", "db_2", NOV),
                         "iqn.2026-11.org.comet:my-pool.db-2")

    def test_invalid(self):
        for args in (("org.comet", "a b", "v"), ("org.comet", "p", "$(x)"),
                     ("org..comet", "p", "v"), ("-org", "p", "v"), ("org.comet", "p", "")):
            self.assertRaises(InvalidInput, tgt.iqn, *args, NOV)

    @given(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"),
           st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"),
           st.dates(datetime.date(2000, 1, 1), datetime.date(2099, 12, 31)))
    def test_always_valid(self, pool, volume, today):
        """Any valid pool and volume name gives a name tgt accepts."""
        name = tgt.iqn("org.comet", pool, volume, today)
        self.assertEqual(tgt.check_iqn(name), name)
        self.assertEqual(name, name.lower())
        self.assertNotIn("_", name)


class ArgvTests(SynchronousTestCase):
    """The tgtadm command lines."""

    def test_show(self):
        self.assertEqual(tgt.show_argv(),
                         ["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show"])
        self.assertEqual(tgt.accounts_argv()[-4:], ["--mode", "account", "--op", "show"])

    def test_target(self):
        name = "iqn.2026-11.org.comet:p.v"
        self.assertEqual(tgt.new_target_argv(3, name), [
            "tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "new", "--tid", "3",
            "--targetname", name])
        self.assertEqual(tgt.delete_target_argv(3), [
            "tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "delete", "--force",
            "--tid", "3"])
        for bad in (0, -1, "1", True):
            self.assertRaises(InvalidInput, tgt.new_target_argv, bad, name)
        self.assertRaises(InvalidInput, tgt.new_target_argv, 1, "iqn.x;reboot")

    def test_lun(self):
        self.assertEqual(tgt.new_lun_argv(3, 1, "/dev/zd16"), [
            "tgtadm", "--lld", "iscsi", "--mode", "logicalunit", "--op", "new", "--tid", "3",
            "--lun", "1", "--backing-store", "/dev/zd16"])
        self.assertRaises(InvalidInput, tgt.new_lun_argv, 3, 1, "/dev/zd0 /etc/passwd")

    def test_bind(self):
        self.assertEqual(tgt.bind_address_argv(3)[-2:], ["--initiator-address", "ALL"])
        self.assertEqual(tgt.bind_address_argv(3, "10.200.0.0/24")[-1], "10.200.0.0/24")
        self.assertRaises(InvalidInput, tgt.bind_address_argv, 3, "host name")
        self.assertEqual(tgt.bind_account_argv(3, "u1"), [
            "tgtadm", "--lld", "iscsi", "--mode", "account", "--op", "bind", "--tid", "3",
            "--user", "u1"])

    def test_account(self):
        """The password is not an argument: the script reads it from stdin."""
        self.assertEqual(tgt.new_account_argv("u1"),
                         ["sh", "-c", tgt.NEW_ACCOUNT_SCRIPT, "comet-chap", "u1"])
        self.assertEqual(tgt.delete_account_argv("u1")[-4:], ["--op", "delete", "--user", "u1"])
        self.assertRaises(InvalidInput, tgt.new_account_argv, "u 1")

    def test_password_rule(self):
        self.assertEqual(tgt.check_password("twelve-chars"), "twelve-chars")
        for bad in ("short", "with space here", "new\nline-in-it", "x" * 256, None):
            self.assertRaises(InvalidInput, tgt.check_password, bad)


class ParserTests(SynchronousTestCase):
    """L{tgt.parse_targets} reads real tgtadm output."""

    def test_testbed_target(self):
        """A target made on the testbed: zvol LUN, CHAP account, ACL ALL."""
        (target,) = tgt.parse_targets(fixture("tgt-show.out"))
        self.assertEqual((target.tid, target.iqn, target.state),
                         (1, "iqn.2026-11.org.comet:capture.v1", "ready"))
        self.assertEqual(target.device, "/dev/zd0")
        self.assertEqual(target.lun(0).backing_store, None)
        self.assertEqual(target.lun(0).type, "controller")
        self.assertEqual((target.lun(1).size_mb, target.lun(1).backing_store_type), (67, "rdwr"))
        self.assertEqual((target.accounts, target.acl, target.connections),
                         (("capture-v1",), ("ALL",), ()))

    def test_nexus(self):
        """A logged-in initiator and its address are read."""
        (target,) = tgt.parse_targets(fixture("tgt-show-nexus.out"))
        self.assertEqual(target.connections, (tgt.Connection(
            "iqn.2026-11.org.comet:host.local", "127.0.0.1"),))
        self.assertEqual(target.acl, ("127.0.0.1",))

    def test_many(self):
        """Several targets, outgoing accounts, several addresses, a target without LUN 1."""
        targets = tgt.parse_targets(fixture("tgt-show-many.out"))
        self.assertEqual([t.tid for t in targets], [1, 3, 4])
        t3, t4 = targets[1], targets[2]
        self.assertEqual((t3.accounts, t3.outgoing), (("comet-db-2",), ("out1",)))
        self.assertEqual(t3.acl, ("10.200.0.1", "10.200.0.2"))
        self.assertIsNone(t4.device)
        self.assertEqual(tgt.free_tid(targets), 2)

    def test_empty(self):
        self.assertEqual(tgt.parse_targets(fixture("tgt-show-empty.out")), [])
        self.assertEqual(tgt.free_tid([]), 1)

    def test_accounts(self):
        self.assertEqual(tgt.parse_accounts(fixture("tgt-accounts.out")), ["capture-v1"])
        self.assertEqual(tgt.parse_accounts(fixture("tgt-accounts-many.out")),
                         ["out1", "comet-db-2", "comet-web-1"])
        self.assertEqual(tgt.parse_accounts(b"Account list:\n"), [])
        self.assertRaises(tgt.ParseError, tgt.parse_accounts, b"something else\n")

    def test_garbage(self):
        self.assertRaises(tgt.ParseError, tgt.parse_targets, b"    LUN: 1\n")

    @given(st.lists(st.tuples(
        st.integers(1, 999), st.from_regex(r"\Aiqn\.20[0-9]{2}-[01][0-9]\.org\.comet:[a-z0-9.-]{1,20}\Z"),
        st.none() | st.integers(0, 4000).map(lambda m: f"/dev/zd{m * 16}"),
        st.lists(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}\Z"), max_size=2),
        st.lists(st.sampled_from(["ALL", "10.200.0.1", "10.0.0.0/8"]), max_size=2),
    ), max_size=5, unique_by=lambda r: r[0]))
    def test_fake_show_round_trip(self, rows):
        """Whatever targets the fake server holds, its show output parses back to them."""
        server = FakeStorageServer()
        for tid, name, device, accounts, acl in rows:
            t = server.targets[tid] = __import__(
                "comet.remote._fakeserver", fromlist=["_Target"])._Target(tid, name)
            if device is not None:
                volume = f"tank/comet/v{tid}"
                server._add(volume, "volume", volsize=1 << 30)
                server.devices[volume] = int(device[7:])
                t.luns[1] = device
            t.accounts += accounts
            t.acl += acl
        parsed = tgt.parse_targets(server.handle(tgt.show_argv(), None).stdout)
        self.assertEqual([(t.tid, t.iqn, t.device, list(t.accounts), list(t.acl)) for t in parsed],
                         sorted((tid, n, d, a, c) for tid, n, d, a, c in rows))


class TranslateTests(SynchronousTestCase):
    """tgtadm's real error messages become the domain's errors."""

    def test_real_messages(self):
        for name, kind in {"tgt-new-exists.err": Conflict, "tgt-delete-missing.err": NotFound,
                           "tgt-account-exists.err": Conflict}.items():
            stderr = fixture(name).decode().strip()
            with self.assertRaises(kind):
                tgt.translate(Failure(CommandFailed(["tgtadm"], 22, stderr, "s")))

    def test_daemon_down(self):
        """tgtadm failing to reach tgtd means the server's iSCSI service is unavailable."""
        stderr = fixture("tgt-daemon-down.err").decode().strip()
        with self.assertRaises(Unavailable) as caught:
            tgt.translate(Failure(CommandFailed(["tgtadm"], 107, stderr, "10.200.0.21")))
        self.assertIn("storage server 10.200.0.21 does not answer", caught.exception.reason)
        self.assertIn("tgtd", caught.exception.reason)

    def test_other(self):
        failure = Failure(CommandFailed(["tgtadm"], 22, fixture("tgt-lun-missing-device.err").decode()))
        self.assertIs(tgt.translate(failure), failure)


class TGTTests(TestCase):
    """L{tgt.TGT} over the fake server: what it runs, and how it cleans up."""

    def setUp(self):
        self.server = FakeStorageServer()
        self.runner = FakeRunner(self.server)
        self.tgt = tgt.TGT(self.runner)
        self.name = tgt.iqn("org.comet", "p", "v", NOV)

    @inlineCallbacks
    def device(self, name="v"):
        volume = yield ZFS(self.runner).create_volume("tank/comet", name, 1 << 20)
        device = yield ZFS(self.runner).device_of(volume.name)
        return device

    def test_bad_input_runs_nothing(self):
        for args, kw in [(("iqn.bad name", "/dev/zd0"), {}),
                         ((self.name, "/etc/passwd;x"), {}),
                         ((self.name, "/dev/zd0"), {"chap_user": "u"}),
                         ((self.name, "/dev/zd0"), {"chap_user": "u", "chap_password": "short"}),
                         ((self.name, "/dev/zd0"), {"initiator": "any one"})]:
            self.assertRaises(InvalidInput, self.tgt.export, *args, **kw)
        self.assertEqual(self.runner.calls, [])

    @inlineCallbacks
    def test_export_commands(self):
        """An export runs show, new target, LUN 1, bind, account, bind account."""
        device = yield self.device()
        del self.runner.calls[:]
        tid = yield self.tgt.export(self.name, device, "u1", "password-1234")
        self.assertEqual(tid, 1)
        self.assertEqual(self.runner.ran, [
            tgt.show_argv(), tgt.new_target_argv(1, self.name), tgt.new_lun_argv(1, 1, device),
            tgt.bind_address_argv(1, "ALL"), tgt.accounts_argv(), tgt.new_account_argv("u1"),
            tgt.bind_account_argv(1, "u1")])
        self.assertEqual(self.runner.calls[5].stdin, b"password-1234\n")

    @inlineCallbacks
    def test_stale_account_replaced(self):
        """An account left over from before gets the new password."""
        device = yield self.device()
        self.server.accounts["u1"] = "old-password-1"
        yield self.tgt.export(self.name, device, "u1", "new-password-1")
        self.assertEqual(self.server.accounts, {"u1": "new-password-1"})

    @inlineCallbacks
    def test_failed_export_cleaned_up(self):
        """A failure half way removes the target and account it made."""
        device = yield self.device()
        self.runner.answer(tgt.bind_account_argv(1, "u1"), code=22, stderr="tgtadm: out of memory")
        yield self.assertFailure(self.tgt.export(self.name, device, "u1", "password-1234"),
                                 CommandFailed)
        self.assertEqual((self.server.targets, self.server.accounts), ({}, {}))

    @inlineCallbacks
    def test_concurrent_exports(self):
        """Exports started together get different target ids."""
        a = yield self.device("a")
        b = yield self.device("b")
        da = self.tgt.export(tgt.iqn("org.comet", "p", "a", NOV), a)
        db = self.tgt.export(tgt.iqn("org.comet", "p", "b", NOV), b)
        tids = [(yield da), (yield db)]
        self.assertEqual(sorted(tids), [1, 2])

    @inlineCallbacks
    def test_exports_overlap(self):
        """
        Only the target id is chosen under the server's lock: a second export
        creates its target while the first one's LUN command is still running.
        """
        a = yield self.device("a")
        b = yield self.device("b")
        held = Deferred()
        lun_a = tgt.new_lun_argv(1, tgt.LUN, a)
        real = self.runner.run
        seen = []

        def run(argv, **kw):
            seen.append(argv)
            if list(argv) == list(lun_a) and not held.called:
                return held.addCallback(lambda _: real(argv, **kw))
            return real(argv, **kw)

        self.patch(self.runner, "run", run)
        da = self.tgt.export(tgt.iqn("org.comet", "p", "a", NOV), a, "ua", "password-1234")
        db = self.tgt.export(tgt.iqn("org.comet", "p", "b", NOV), b, "ub", "password-5678")
        self.assertEqual((yield db), 2)       # all of b's export ran while a's LUN waited
        self.assertFalse(da.called)
        held.callback(None)
        self.assertEqual((yield da), 1)
        targets = yield self.tgt.targets()
        self.assertEqual([(t.tid, t.accounts) for t in targets], [(1, ("ua",)), (2, ("ub",))])

    @inlineCallbacks
    def test_tid_taken_by_another_process(self):
        """
        Another process (another Comet on the same server) makes a target with
        the free tid between this export's show and its new: it looks again
        and takes the next one.
        """
        device = yield self.device()
        other = tgt.iqn("org.comet", "q", "other", NOV)
        answer = self.runner._answer

        def racing(argv, stdin):
            if argv == tgt.new_target_argv(1, self.name) and not self.server.targets:
                self.server.handle(tgt.new_target_argv(1, other), None)
            return answer(argv, stdin)

        self.runner._answer = racing
        tid = yield self.tgt.export(self.name, device)
        self.assertEqual(tid, 2)
        targets = yield self.tgt.targets()
        self.assertEqual(sorted((t.tid, t.iqn) for t in targets), [(1, other), (2, self.name)])

    @inlineCallbacks
    def test_tid_always_taken(self):
        """Still taken after L{tgt.NEW_TARGET_TRIES} looks: the Conflict passes."""
        device = yield self.device()
        self.runner.answer(tgt.new_target_argv(1, self.name), code=22,
                           stderr="tgtadm: this target already exists")
        yield self.assertFailure(self.tgt.export(self.name, device), Conflict)
        self.assertEqual(
            [argv for argv in self.runner.ran if argv == tgt.new_target_argv(1, self.name)],
            [tgt.new_target_argv(1, self.name)] * tgt.NEW_TARGET_TRIES)

    @inlineCallbacks
    def test_shared_account_kept(self):
        """Unexporting keeps an account another target still uses."""
        a = yield self.device("a")
        b = yield self.device("b")
        yield self.tgt.export(tgt.iqn("org.comet", "p", "a", NOV), a, "host1", "password-1234")
        yield self.tgt.export(tgt.iqn("org.comet", "p", "b", NOV), b, "host1", "password-5678")
        targets = yield self.tgt.targets()
        self.assertEqual([t.accounts for t in targets], [("host1",), ("host1",)])
        self.assertEqual(self.server.accounts, {"host1": "password-5678"})
        yield self.tgt.unexport(tgt.iqn("org.comet", "p", "a", NOV))
        self.assertEqual(list(self.server.accounts), ["host1"])
        yield self.tgt.unexport(tgt.iqn("org.comet", "p", "b", NOV))
        self.assertEqual(self.server.accounts, {})
