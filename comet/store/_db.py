"""
The SQLite connection: one connection in one thread, explicit transactions.

Comet keeps all it owns in one SQLite file.  All access goes through a
C{twisted.enterprise.adbapi} pool of exactly one connection, so statements never
run in the reactor thread and transactions never interleave: a read-then-write
(such as choosing the smallest free VM name) is atomic by construction.

The connection is in autocommit mode (``isolation_level=None``) and
L{Database.transact} wraps each unit of work in ``BEGIN IMMEDIATE`` /
``COMMIT`` itself, so schema changes (DDL) are transactional too, which the
sqlite3 module's implicit transactions would not give.

Reads that need no write lock may go to L{Database.read} instead: a second,
read-only connection in a thread of its own, so that they do not wait in line
behind the writes (WAL mode lets a reader and the writer run at once).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from typing import Any, Callable, Iterator, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from comet.store._backup import NewerSchema, copy_database, schema_version
from comet.store._migrations import MIGRATIONS
from comet.store._readcache import ReadCache

T = TypeVar("T")

log = Logger()


#: What SQLite adds beside the file in WAL mode.
_SIDE_FILES = ("-wal", "-shm", "-journal")


def make_private(path: str) -> None:
    """
    Create the SQLite file at C{path} if absent with mode 0600, and bring an
    existing one (and its C{-wal}/C{-shm}) to 0600.

    The file holds CHAP secrets and password and token hashes: made with the
    umask's mode (0644 as a rule) every local user could read them.  SQLite
    gives the C{-wal} and C{-shm} files the database file's own mode, so
    making the file first, 0600, covers those it creates later; those left by
    an earlier run are fixed here.  Run before the first C{sqlite3.connect}.
    """
    if path == ":memory:" or path.startswith("file:"):
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in _SIDE_FILES:
        try:
            fd = os.open(path + suffix, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            continue
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)


def _prepare(conn: sqlite3.Connection) -> None:
    """Settings every connection needs before its first statement."""
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")


def in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """
    C{fn(conn, *args)} inside one write transaction on a blocking connection
    (as L{Database.transact} runs it in the database thread): committed when
    it returns, rolled back when it raises.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _in_transaction_then(conn: sqlite3.Connection, committed: Callable[[T], object],
                         fn: Callable[..., T], *args: Any) -> T:
    result = in_transaction(conn, fn, *args)
    committed(result)
    return result


def _prepare_reader(conn: sqlite3.Connection) -> None:
    _prepare(conn)
    conn.execute("PRAGMA query_only=ON")


def _in_read_transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    # A deferred transaction: one consistent snapshot, no write lock.
    conn.execute("BEGIN")
    try:
        return fn(conn, *args)
    finally:
        conn.execute("COMMIT")


def _apply(conn: sqlite3.Connection, migrations) -> list[int]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)"
    )
    done = _done(conn)
    applied = []
    for version, statements in migrations:
        if version in done:
            continue
        for statement in statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, applied)"
            " VALUES (?, CAST(strftime('%s','now') AS INTEGER))",
            (version,),
        )
        applied.append(version)
    return applied


def migrate(conn: sqlite3.Connection, migrations=MIGRATIONS) -> list[int]:
    """
    Apply to C{conn} every migration it lacks, in order, each in its own
    transaction (a failed one leaves the file at the previous whole
    version).

    @return: the versions applied now.
    """
    applied = []
    # Read first without a write lock (opening an up-to-date file takes
    # none), then again inside each migration's transaction (_apply).
    done = _done(conn) if schema_version(conn) else set()
    for migration in migrations:
        if migration[0] not in done:
            applied += in_transaction(conn, _apply, [migration])
    return applied


def _done(conn: sqlite3.Connection) -> set[int]:
    """The versions applied to C{conn}'s file (its C{schema_migrations} table exists)."""
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def _open(path: str, migrations, create: bool = True) -> tuple[sqlite3.Connection, list[int]]:
    """
    A blocking connection to the file at C{path}, made private, prepared and
    migrated.

    A file at a schema version newer than C{migrations} know is refused
    (L{NewerSchema}), untouched.  Before a file that has data is migrated, a
    copy of it is kept beside it as C{<path>.pre-v<N>} (N: its version then),
    so that an upgrade that goes wrong can be undone by hand.

    @param create: whether a missing file is made (a new, empty database);
        otherwise C{FileNotFoundError}.
    """
    if not create and not os.path.exists(path):
        raise FileNotFoundError(f"database {path} does not exist")
    make_private(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _prepare(conn)
        found = schema_version(conn)
        known = max((version for version, _ in migrations), default=0)
        if found > known:
            raise NewerSchema(path, found, known)
        if 0 < found < known and path != ":memory:":
            kept = f"{path}.pre-v{found}"
            if not os.path.lexists(kept):
                copy_database(conn, kept)
                log.info("database {path}: kept a copy at schema version {found} as {kept}"
                         " before migrating", path=path, found=found, kept=kept)
        applied = migrate(conn, migrations)
    except BaseException:
        conn.close()
        raise
    return conn, applied


@contextlib.contextmanager
def connect(path: str, migrations=MIGRATIONS, create: bool = True) -> Iterator[sqlite3.Connection]:
    """
    A blocking connection to the SQLite file at C{path} (created 0600 if
    absent and C{create}), migrated to the current schema, closed when the
    block ends: for C{comet-admin}, which works on the file without a daemon
    and without a reactor.  Run units of work on it with L{in_transaction}.
    """
    conn, _ = _open(path, migrations, create)
    try:
        yield conn
    finally:
        conn.close()


class Database:
    """
    Comet's SQLite file.

    @ivar path: the file's path (``:memory:`` is not supported: each pool
        connection would see its own database).
    """

    def __init__(self, path: str, migrations=MIGRATIONS):
        self.path = path
        self._migrations = migrations
        self._pool: adbapi.ConnectionPool | None = None
        self._reader: adbapi.ConnectionPool | None = None
        self._caches: dict[str, ReadCache] = {}

    def open(self) -> list[int]:
        """
        Open the file (creating it if needed), apply every migration it lacks,
        in order, each in its own transaction, and start the connection pool.

        This runs once, before the reactor serves anything, so it may block:
        no request can see a half-migrated schema.

        @return: the versions applied now.
        """
        conn, applied = _open(self.path, self._migrations)
        conn.close()
        if applied:
            log.info("database {path}: applied migrations {applied}", path=self.path, applied=applied)
        self._pool = self._one_connection("comet-sqlite", _prepare)
        self._reader = self._one_connection("comet-sqlite-read", _prepare_reader)
        return applied

    def _one_connection(self, name: str, prepare) -> adbapi.ConnectionPool:
        """A pool of one connection to the file, in a thread of its own."""
        pool = adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            isolation_level=None,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=prepare,
        )
        # named, so that a pool left running (a Database never closed) says whose it is
        pool.threadpool.name = f"{name} {self.path}"
        return pool

    def transact(self, fn: Callable[..., T], *args: Any,
                 committed: Callable[[T], object] | None = None) -> Deferred[T]:
        """
        Run C{fn(connection, *args)} in the database thread, inside one
        transaction that commits when it returns and rolls back when it raises.

        @param committed: called with the result in the database thread right
            after the commit, before the next transaction begins (a write that
            notes what it changed, for the readers: L{ReadCache.written}).
        """
        assert self._pool is not None, "database is not open"
        if committed is None:
            return self._pool.runWithConnection(in_transaction, fn, *args)
        return self._pool.runWithConnection(_in_transaction_then, committed, fn, *args)

    def read(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Run C{fn(connection, *args)}, which only reads, in the reader thread:
        on a second, read-only connection, in one snapshot.  In WAL mode a
        reader never waits for the writer, so a read (C{GET /cluster} during a
        cluster start) does not queue behind the writes in the database
        thread; it sees every transaction committed before it began.
        """
        assert self._reader is not None, "database is not open"
        return self._reader.runWithConnection(_in_read_transaction, fn, *args)

    def cache(self, generation: str) -> ReadCache:
        """
        The L{ReadCache} of reads from this file that are stale whenever the
        C{generations} counter C{generation} moves (one per counter, shared by
        every repository whose rows it counts: keys begin with what they
        are); closed with the database.
        """
        cache = self._caches.get(generation)
        if cache is None:
            cache = self._caches[generation] = ReadCache(self.path, generation)
        return cache

    def close(self) -> None:
        """Close the connections (waiting for the statements in progress)."""
        for cache in self._caches.values():
            cache.close()
        self._caches.clear()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
