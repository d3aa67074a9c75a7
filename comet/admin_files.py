"""
C{comet-admin backup} and C{restore}: the database file as a whole.

A backup is taken from a read-only connection with SQLite's online backup
API (L{comet.store.copy_database}), so it is one consistent snapshot even
while the daemon writes, and it changes nothing in the live file (no
migration, no lock).  A restore puts a backup in place of the database; it
is refused while a daemon over that database runs (the daemon's lease: its
owner row), since a daemon would go on writing into the file it had open and
undo the restore.  The file replaced is kept as C{<path>.pre-restore}.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from typing import Iterator

from comet.errors import CometError
from comet.store import MIGRATIONS_KNOWN, NewerSchema, copy_database, schema_version
from comet.store.locks import owners_on

__all__ = ["backup", "restore"]


@contextlib.contextmanager
def _read_only(path: str) -> Iterator[sqlite3.Connection]:
    if not os.path.exists(path):
        raise CometError(f"{path} does not exist")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def _is_comet(path: str, conn: sqlite3.Connection) -> int:
    """C{conn}'s schema version, after checking that it is a whole Comet database."""
    try:
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        version = schema_version(conn)
    except sqlite3.DatabaseError as e:
        raise CometError(f"{path} is not a SQLite database Comet can read: {e}") from None
    if verdict != "ok":
        raise CometError(f"{path} is damaged (SQLite's check: {verdict})")
    if version == 0:
        raise CometError(f"{path} is not a Comet database (no schema version)")
    if version > MIGRATIONS_KNOWN:
        raise NewerSchema(path, version, MIGRATIONS_KNOWN)
    return version


def backup(path: str, dest: str) -> None:
    """Copy the database at C{path} to the new file C{dest} (0600), consistently."""
    with _read_only(path) as conn:
        _is_comet(path, conn)
        try:
            copy_database(conn, dest)
        except FileExistsError:
            raise CometError(f"{dest} already exists; a backup never replaces a file") from None


def restore(path: str, source: str) -> str:
    """
    Put the backup C{source} in place of the database at C{path}, which no
    running daemon may hold.  The file replaced is kept; its path is returned.
    """
    with _read_only(source) as backup_conn:
        _is_comet(source, backup_conn)
        return _replace(path, backup_conn)


def _replace(path: str, backup_conn: sqlite3.Connection) -> str:
    """Put the database of C{backup_conn} in place of the one at C{path}, unless a daemon runs."""
    from comet.model.locks import alive, this_process

    kept = f"{path}.pre-restore"
    if os.path.exists(path):
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as live:
            live.row_factory = sqlite3.Row
            me = this_process()
            try:
                owners = owners_on(live) if schema_version(live) else []
            except sqlite3.DatabaseError:
                owners = []  # not a database Comet can read: nobody runs on it
            running = [o for o in owners if alive(o, me, now=time.time())]
            if running:
                o = running[0]
                raise CometError(
                    f"a Comet daemon (pid {o.pid} on {o.hostname}) runs over {path}:"
                    " stop it before restoring"
                )
            # The live file's -wal is its own: folded in before the copy, and
            # gone before the backup takes the file's place (applied to the
            # backup it would corrupt it).
            live.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            copy_database(live, kept, replace=True)
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
    copy_database(backup_conn, path, replace=True)
    return kept
