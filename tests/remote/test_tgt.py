"""
Tests for L{comet.remote.tgt}: error translation (on real tgt 1.0.85
messages, see C{data/manifest.json}) and the L{TGT} API over a L{FakeRunner}.
"""

from __future__ import annotations

import datetime

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from comet.errors import CommandFailed, Conflict, InvalidInput, NotFound, Unavailable
from comet.remote import FakeRunner, FakeStorageServer
from comet.remote import tgt
from comet.remote.zfs import ZFS
from tests.remote._captured import fixture

NOV = datetime.date(2026, 11, 27)


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
