"""
Tests for L{comet.remote.tgt_output}: the parser of C{tgtadm --op show} (on
real tgt 1.0.85 output, see C{data/manifest.json}) and free target ids.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from comet.remote import FakeStorageServer, tgt_commands, tgt_output
from tests.remote._captured import fixture


class ParserTests(SynchronousTestCase):
    """L{tgt_output.parse_targets} reads real tgtadm output."""

    def test_testbed_target(self):
        """A target made on the testbed: zvol LUN, CHAP account, ACL ALL."""
        (target,) = tgt_output.parse_targets(fixture("tgt-show.out"))
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
        (target,) = tgt_output.parse_targets(fixture("tgt-show-nexus.out"))
        self.assertEqual(target.connections, (tgt_output.Connection(
            "iqn.2026-11.org.comet:host.local", "127.0.0.1"),))
        self.assertEqual(target.acl, ("127.0.0.1",))

    def test_many(self):
        """Several targets, outgoing accounts, several addresses, a target without LUN 1."""
        targets = tgt_output.parse_targets(fixture("tgt-show-many.out"))
        self.assertEqual([t.tid for t in targets], [1, 3, 4])
        t3, t4 = targets[1], targets[2]
        self.assertEqual((t3.accounts, t3.outgoing), (("comet-db-2",), ("out1",)))
        self.assertEqual(t3.acl, ("10.200.0.1", "10.200.0.2"))
        self.assertIsNone(t4.device)
        self.assertEqual(tgt_output.free_tid(targets), 2)

    def test_empty(self):
        self.assertEqual(tgt_output.parse_targets(fixture("tgt-show-empty.out")), [])
        self.assertEqual(tgt_output.free_tid([]), 1)

    def test_accounts(self):
        self.assertEqual(tgt_output.parse_accounts(fixture("tgt-accounts.out")), ["capture-v1"])
        self.assertEqual(tgt_output.parse_accounts(fixture("tgt-accounts-many.out")),
                         ["out1", "comet-db-2", "comet-web-1"])
        self.assertEqual(tgt_output.parse_accounts(b"Account list:\n"), [])
        self.assertRaises(tgt_output.ParseError, tgt_output.parse_accounts, b"something else\n")

    def test_garbage(self):
        self.assertRaises(tgt_output.ParseError, tgt_output.parse_targets, b"    LUN: 1\n")

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
        parsed = tgt_output.parse_targets(server.handle(tgt_commands.show_argv(), None).stdout)
        self.assertEqual([(t.tid, t.iqn, t.device, list(t.accounts), list(t.acl)) for t in parsed],
                         sorted((tid, n, d, a, c) for tid, n, d, a, c in rows))
