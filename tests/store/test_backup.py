"""
Tests for L{comet.store._backup} and what L{comet.store.connect} does with
it: schema versions, a consistent copy of a live file, the copy kept before
a migration, and a file from a newer Comet refused untouched.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from twisted.trial.unittest import TestCase

from comet.store import (
    MIGRATIONS_KNOWN, NewerSchema, connect, copy_database, in_transaction, schema_version,
)
from comet.store._migrations import MIGRATIONS
from tests._util import temp_dir


def _rows(path: str, sql: str) -> list:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


class SchemaVersionTests(TestCase):
    def test_versions(self):
        path = os.path.join(temp_dir(self), "db")
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        self.assertEqual(schema_version(conn), 0)
        with connect(path) as migrated:
            self.assertEqual(schema_version(migrated), MIGRATIONS_KNOWN)
        self.assertEqual(MIGRATIONS_KNOWN, MIGRATIONS[-1][0])


class CopyTests(TestCase):
    def setUp(self):
        self.dir = temp_dir(self)
        self.path = os.path.join(self.dir, "comet.sqlite")

    def test_copy_is_private_and_whole(self):
        """The copy is 0600 whatever the umask, one file (no -wal), with every committed row."""
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        dest = os.path.join(self.dir, "copy.sqlite")
        with connect(self.path) as conn:
            in_transaction(conn, lambda c: c.execute(
                "INSERT INTO users (name, role, created) VALUES ('ann', 'admin', 1)"))
            copy_database(conn, dest)
        self.assertEqual(os.stat(dest).st_mode & 0o777, 0o600)
        self.assertEqual(_rows(dest, "SELECT name FROM users"), [("ann",)])
        self.assertEqual(_rows(dest, "PRAGMA journal_mode"), [("delete",)])
        self.assertEqual([n for n in os.listdir(self.dir) if n.startswith("copy")],
                         ["copy.sqlite"])

    def test_never_replaces_unless_told(self):
        dest = os.path.join(self.dir, "copy.sqlite")
        with open(dest, "w") as f:
            f.write("precious")
        with connect(self.path) as conn:
            self.assertRaises(FileExistsError, copy_database, conn, dest)
            with open(dest) as f:
                self.assertEqual(f.read(), "precious")
            copy_database(conn, dest, replace=True)
        self.assertEqual(_rows(dest, "SELECT COUNT(*) FROM users"), [(0,)])

    def test_failed_copy_leaves_nothing(self):
        """A copy that fails half way leaves no partial file beside the target."""
        with connect(self.path) as conn:
            conn.close()   # the backup API then fails
            self.assertRaises(sqlite3.ProgrammingError, copy_database, conn,
                              os.path.join(self.dir, "copy.sqlite"))
        self.assertEqual(sorted(n for n in os.listdir(self.dir) if "copy" in n), [])

    def test_copy_while_another_connection_writes(self):
        """
        A copy taken while another connection commits in a loop is one
        consistent snapshot: its rows are a prefix of the writes, whole.
        """
        with connect(self.path):
            pass
        stop = threading.Event()

        def write():
            conn = sqlite3.connect(self.path, isolation_level=None)
            n = 0
            while not stop.is_set():
                n += 1
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO users (name, role, created) VALUES (?, 'viewer', ?)",
                             (f"u{n}", n))
                conn.execute("INSERT INTO audit_log (time, user, method, uri, status)"
                             " VALUES (?, ?, 'POST', '/', 201)", (n, f"u{n}"))
                conn.execute("COMMIT")
                time.sleep(0.001)   # a daemon's pace, not a lock held for ever
            conn.close()

        writer = threading.Thread(target=write)
        writer.start()
        try:
            copies = []
            for i in range(5):
                dest = os.path.join(self.dir, f"copy{i}.sqlite")
                with connect(self.path) as conn:
                    copy_database(conn, dest)
                copies.append(dest)
        finally:
            stop.set()
            writer.join()
        for dest in copies:
            self.assertEqual(_rows(dest, "PRAGMA integrity_check"), [("ok",)])
            users = _rows(dest, "SELECT created FROM users ORDER BY created")
            audit = _rows(dest, "SELECT time FROM audit_log ORDER BY time")
            self.assertEqual(users, audit)   # both halves of every transaction, or neither
            self.assertEqual([u[0] for u in users], list(range(1, len(users) + 1)))


class UpgradeTests(TestCase):
    def setUp(self):
        self.dir = temp_dir(self)
        self.path = os.path.join(self.dir, "comet.sqlite")

    def test_copy_kept_before_a_migration(self):
        """A file with data, migrated, is first kept as <path>.pre-v<N>, 0600, at version N."""
        with connect(self.path, MIGRATIONS[:-1]) as conn:
            in_transaction(conn, lambda c: c.execute(
                "INSERT INTO users (name, role, created) VALUES ('ann', 'admin', 1)"))
        old = MIGRATIONS[-2][0]
        with connect(self.path) as conn:
            self.assertEqual(schema_version(conn), MIGRATIONS_KNOWN)
        kept = f"{self.path}.pre-v{old}"
        self.assertEqual(os.stat(kept).st_mode & 0o777, 0o600)
        self.assertEqual(_rows(kept, "SELECT MAX(version) FROM schema_migrations"), [(old,)])
        self.assertEqual(_rows(kept, "SELECT name FROM users"), [("ann",)])

    def test_kept_copy_never_written_through_a_planted_link(self):
        """
        A symlink planted at the copy's name (the directory's other writers) is
        neither followed nor replaced: the file it points at stays as it was.
        """
        with connect(self.path, MIGRATIONS[:-1]) as conn:
            in_transaction(conn, lambda c: c.execute(
                "INSERT INTO users (name, role, created) VALUES ('ann', 'admin', 1)"))
        victim = os.path.join(self.dir, "victim")
        with open(victim, "w") as f:
            f.write("not yours")
        kept = f"{self.path}.pre-v{MIGRATIONS[-2][0]}"
        os.symlink(victim, kept)
        with connect(self.path) as conn:
            self.assertEqual(schema_version(conn), MIGRATIONS_KNOWN)
        with open(victim) as f:
            self.assertEqual(f.read(), "not yours")
        self.assertEqual(os.readlink(kept), victim)
        self.assertEqual([n for n in os.listdir(self.dir) if "partial" in n], [])

    def test_no_copy_of_a_new_or_current_file(self):
        with connect(self.path):
            pass
        with connect(self.path):
            pass
        self.assertEqual([n for n in os.listdir(self.dir) if ".pre-v" in n], [])

    def test_newer_schema_refused_untouched(self):
        """A file a newer Comet wrote is refused, naming both versions, and not changed."""
        later = MIGRATIONS + [(MIGRATIONS_KNOWN + 1, ["CREATE TABLE later (x INTEGER)"])]
        with connect(self.path, later):
            pass
        with open(self.path, "rb") as f:
            before = f.read()
        e = self.assertRaises(NewerSchema, lambda: connect(self.path).__enter__())
        self.assertEqual((e.found, e.known), (MIGRATIONS_KNOWN + 1, MIGRATIONS_KNOWN))
        self.assertIn(f"schema version {MIGRATIONS_KNOWN + 1}, newer than this Comet knows"
                      f" ({MIGRATIONS_KNOWN})", str(e))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_missing_file_not_made_unless_asked(self):
        self.assertRaises(FileNotFoundError, lambda: connect(self.path, create=False).__enter__())
        self.assertFalse(os.path.exists(self.path))
