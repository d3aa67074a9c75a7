"""
Tests for L{comet.admin_files}: C{comet-admin backup} of a live database and
C{restore} with the daemon stopped.
"""

from __future__ import annotations

import os
import sqlite3

import attrs
from twisted.trial.unittest import TestCase

from comet.admin_files import backup, restore
from comet.errors import CometError
from comet.model.locks import this_process
from comet.store import MIGRATIONS_KNOWN, NewerSchema, connect, in_transaction, users
from comet.store.locks import owners_on
from tests._util import temp_dir


def _names(path: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM users ORDER BY name")]
    finally:
        conn.close()


def _add(path: str, name: str) -> None:
    with connect(path) as conn:
        in_transaction(conn, users.add_user, name, "viewer", None)


class BackupRestoreTests(TestCase):
    def setUp(self):
        self.dir = temp_dir(self)
        self.path = os.path.join(self.dir, "comet.sqlite")
        self.copy = os.path.join(self.dir, "backup.sqlite")
        _add(self.path, "ann")

    def test_backup_while_open_and_restore(self):
        """
        A backup taken while a writer holds the file open has what was
        committed; a restore brings it back and keeps what it replaced.
        """
        live = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(live.close)
        live.execute("PRAGMA journal_mode=WAL")
        live.execute("INSERT INTO users (name, role, created) VALUES ('bob', 'viewer', 1)")
        backup(self.path, self.copy)   # bob is only in the -wal so far
        live.close()
        self.assertEqual(os.stat(self.copy).st_mode & 0o777, 0o600)
        self.assertEqual(_names(self.copy), ["ann", "bob"])
        _add(self.path, "cy")
        kept = restore(self.path, self.copy)
        self.assertEqual(_names(self.path), ["ann", "bob"])
        self.assertEqual(_names(kept), ["ann", "bob", "cy"])
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(kept).st_mode & 0o777, 0o600)
        with connect(self.path) as conn:   # the daemon's way in still works
            self.assertEqual(len(users.list_users(conn)), 2)

    def test_backup_never_replaces(self):
        with open(self.copy, "w") as f:
            f.write("an older backup")
        e = self.assertRaises(CometError, backup, self.path, self.copy)
        self.assertIn("already exists", e.reason)
        with open(self.copy) as f:
            self.assertEqual(f.read(), "an older backup")

    def test_restore_refused_while_a_daemon_runs(self):
        """A live owner row (this very process stands in for the daemon) refuses the restore."""
        backup(self.path, self.copy)
        _add(self.path, "cy")
        with connect(self.path) as conn:
            owner = attrs.evolve(this_process(), owner="running-daemon")
            in_transaction(conn, lambda c: c.execute(
                "INSERT INTO owners (owner, pid, hostname, boot, proc_start, started, renewed)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", attrs.astuple(owner)))
            self.assertEqual(len(owners_on(conn)), 1)
        e = self.assertRaises(CometError, restore, self.path, self.copy)
        self.assertIn(f"a Comet daemon (pid {os.getpid()}", e.reason)
        self.assertIn("stop it before restoring", e.reason)
        self.assertEqual(_names(self.path), ["ann", "cy"])

    def test_restore_refuses_what_is_not_a_comet_backup(self):
        junk = os.path.join(self.dir, "junk")
        with open(junk, "w") as f:
            f.write("not a database at all, just text " * 200)
        self.assertRaises(CometError, restore, self.path, junk)
        empty = os.path.join(self.dir, "empty.sqlite")
        sqlite3.connect(empty).close()
        e = self.assertRaises(CometError, restore, self.path, empty)
        self.assertIn("not a Comet database", e.reason)
        self.assertRaises(CometError, restore, self.path, os.path.join(self.dir, "missing"))
        self.assertEqual(_names(self.path), ["ann"])

    def test_restore_refuses_a_newer_schema(self):
        backup(self.path, self.copy)
        conn = sqlite3.connect(self.copy, isolation_level=None)
        conn.execute("INSERT INTO schema_migrations (version, applied) VALUES (?, 0)",
                     (MIGRATIONS_KNOWN + 1,))
        conn.close()
        e = self.assertRaises(NewerSchema, restore, self.path, self.copy)
        self.assertEqual(e.found, MIGRATIONS_KNOWN + 1)
        self.assertEqual(_names(self.path), ["ann"])
