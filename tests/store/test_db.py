"""The SQLite connection: migrations, transactions, WAL and foreign keys."""

import os
import sqlite3

from twisted.trial.unittest import TestCase

from comet.store import Database, connect, in_transaction, migrate
from comet.store._migrations import MIGRATIONS
from tests._util import temp_dir


def _path(testcase):
    return os.path.join(temp_dir(testcase), "comet.sqlite")


class MigrationTests(TestCase):
    def test_fresh_database(self):
        """A new file gets every migration, in order, recorded."""
        db = Database(_path(self))
        applied = db.open()
        self.addCleanup(db.close)
        self.assertEqual(applied, [v for v, _ in MIGRATIONS])

    def test_reopen_applies_nothing(self):
        """Opening an up-to-date file applies nothing."""
        path = _path(self)
        first = Database(path)
        first.open()
        first.close()
        db = Database(path)
        self.assertEqual(db.open(), [])
        db.close()

    def test_upgrade_path(self):
        """A file at version 1 gets only the later migrations, keeping its rows."""
        path = _path(self)
        extra = MIGRATIONS + [
            (999, ["CREATE TABLE later (x INTEGER)", "INSERT INTO later VALUES (7)"])
        ]
        old = Database(path, migrations=MIGRATIONS[:1])
        old.open()
        old.close()
        conn = sqlite3.connect(path)
        conn.execute("INSERT INTO clusters (name, description, created) VALUES ('kept', '', 1)")
        conn.commit()
        conn.close()
        db = Database(path, migrations=extra)
        self.assertEqual(db.open(), [v for v, _ in extra[1:]])
        db.close()
        conn = sqlite3.connect(path)
        self.assertEqual([r[0] for r in conn.execute("SELECT name FROM clusters")], ["kept"])
        self.assertEqual(conn.execute("SELECT x FROM later").fetchall(), [(7,)])
        conn.close()

    def test_failed_migration_is_rolled_back(self):
        """A migration that fails leaves the file at the previous whole version."""
        path = _path(self)
        broken = MIGRATIONS + [(999, ["CREATE TABLE half (x INTEGER)", "NOT SQL"])]
        self.assertRaises(sqlite3.OperationalError, Database(path, migrations=broken).open)
        conn = sqlite3.connect(path)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        conn.close()
        self.assertNotIn("half", tables)
        self.assertNotIn(999, versions)


class BlockingTests(TestCase):
    """C{connect}, C{in_transaction} and C{migrate}: the file without a reactor (C{comet-admin})."""

    def test_connect_migrates(self):
        """A new file is made private and gets every migration; the daemon then applies none."""
        path = _path(self)
        with connect(path) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
            self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchone()[0], 1)
        self.assertEqual(versions, [v for v, _ in MIGRATIONS])
        self.assertEqual(oct(os.stat(path).st_mode & 0o777), "0o600")
        db = Database(path)
        self.assertEqual(db.open(), [])
        db.close()

    def test_migrate_applies_only_missing(self):
        path = _path(self)
        with connect(path, migrations=MIGRATIONS[:1]) as conn:
            self.assertEqual(migrate(conn), [v for v, _ in MIGRATIONS[1:]])
            self.assertEqual(migrate(conn), [])

    def test_in_transaction(self):
        """Committed when the work returns, rolled back when it raises."""
        with connect(_path(self)) as conn:
            add = "INSERT INTO clusters (name, description, created) VALUES (?, '', 1)"
            self.assertEqual(in_transaction(conn, lambda c: c.execute(add, ("kept",)).rowcount), 1)

            def half(c):
                c.execute(add, ("gone",))
                raise ValueError("stop")

            self.assertRaises(ValueError, in_transaction, conn, half)
            self.assertEqual([r[0] for r in conn.execute("SELECT name FROM clusters")], ["kept"])


class ConnectionTests(TestCase):
    def setUp(self):
        self.db = Database(_path(self))
        self.db.open()
        self.addCleanup(self.db.close)

    async def test_pragmas(self):
        """The connection runs in WAL mode with foreign keys on."""

        def pragmas(conn):
            return (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA foreign_keys").fetchone()[0],
            )

        self.assertEqual(await self.db.transact(pragmas), ("wal", 1))

    async def test_rollback(self):
        """A unit of work that raises leaves nothing behind."""

        def half(conn):
            conn.execute("INSERT INTO clusters (name, description, created) VALUES ('x', '', 1)")
            raise ValueError("stop")

        with self.assertRaises(ValueError):
            await self.db.transact(half)
        rows = await self.db.transact(lambda c: c.execute("SELECT * FROM clusters").fetchall())
        self.assertEqual(rows, [])

    async def test_not_in_reactor_thread(self):
        """Statements run outside the reactor thread."""
        import threading

        main = threading.current_thread()
        thread = await self.db.transact(lambda c: threading.current_thread())
        self.assertIsNot(thread, main)

    async def test_read(self):
        """
        C{read} runs on a read-only connection of its own thread, and sees
        what was committed before it.
        """
        import sqlite3
        import threading

        await self.db.transact(
            lambda c: c.execute("INSERT INTO clusters (name, description, created) VALUES ('x', '', 1)")
        )
        names = await self.db.read(lambda c: [r[0] for r in c.execute("SELECT name FROM clusters")])
        self.assertEqual(names, ["x"])
        writer = await self.db.transact(lambda c: threading.current_thread())
        reader = await self.db.read(lambda c: threading.current_thread())
        self.assertNotIn(reader, (writer, threading.current_thread()))
        with self.assertRaises(sqlite3.OperationalError):
            await self.db.read(lambda c: c.execute("DELETE FROM clusters"))


class FileModeTests(TestCase):
    """The file holds CHAP secrets and credential hashes: no other local user may read it."""

    def setUp(self):
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)

    def _modes(self, path):
        return {
            suffix: oct(os.stat(path + suffix).st_mode & 0o777)
            for suffix in ("", "-wal", "-shm")
            if os.path.exists(path + suffix)
        }

    def test_new_file_is_private(self):
        """A new database and its -wal and -shm are 0600, whatever the umask."""
        path = _path(self)
        db = Database(path)
        db.open()
        self.addCleanup(db.close)
        # a write through the pool makes the -wal and -shm exist
        return db.transact(lambda c: c.execute("CREATE TABLE t (x)")).addCallback(
            lambda _: self.assertEqual(
                self._modes(path), {"": "0o600", "-wal": "0o600", "-shm": "0o600"}
            )
        )

    def test_existing_file_is_made_private(self):
        """A file left 0644 by an earlier version (with its -wal, -shm) is 0600 once opened."""
        path = _path(self)
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        for suffix in ("", "-wal", "-shm"):
            os.chmod(path + suffix, 0o644)
        db = Database(path)
        db.open()
        db.close()
        conn.close()
        self.assertTrue(all(m == "0o600" for m in self._modes(path).values()), self._modes(path))
        self.assertEqual(self._modes(path)[""], "0o600")
