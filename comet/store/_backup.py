"""
Copies of the SQLite file, and the schema version a file is at.

A copy is made with SQLite's online backup API, page by page from a
connection: consistent even while the daemon writes (the copy is one
snapshot of committed transactions; a plain C{cp} of a WAL database can miss
or tear the latest ones).  Every copy is created 0600 before SQLite writes a
byte into it, under a temporary name renamed into place when whole, so a
failed copy never leaves a half file under the final name.
"""

from __future__ import annotations

import os
import sqlite3


class NewerSchema(Exception):
    """
    The file is at a schema version this Comet does not know: a newer Comet
    wrote it, and this one must not read or change it (it would misread
    columns it does not know, or undo nothing and corrupt the rest).
    """

    def __init__(self, path: str, found: int, known: int):
        super().__init__(
            f"database {path} is at schema version {found}, newer than this Comet knows"
            f" ({known}): run the Comet that wrote it, or restore a backup made for this one"
        )
        self.found, self.known = found, known


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest migration applied to C{conn}'s file (0: a new, empty file)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not exists:
        return 0
    return conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]


def copy_database(source: sqlite3.Connection, path: str, replace: bool = False) -> None:
    """
    Write a consistent copy of C{source}'s database to C{path}, mode 0600.

    @param replace: whether an existing C{path} may be replaced; otherwise
        C{FileExistsError}.
    """
    if not replace and os.path.lexists(path):
        raise FileExistsError(f"{path} already exists")
    partial = f"{path}.partial-{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    os.close(fd)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target)
            # One self-contained file: no -wal beside it to be forgotten.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
        if replace:
            os.replace(partial, path)
        else:
            os.link(partial, path)   # fails, like the check above, if path appeared
            os.unlink(partial)
    except BaseException:
        for leftover in (partial, partial + "-journal"):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass
        raise
