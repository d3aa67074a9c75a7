"""
A cache of API-token lookups that can never outlive a revocation.

Looking a Bearer token up costs a hand-off to the database thread and back
(the SQL itself is cheap), on every request.  L{TokenCache} keeps the answers
(token hash -> user) in memory, and throws them all away as soon as anything
has been committed to the database file by any connection other than its own
watcher: the daemon's connection, C{comet-admin} in another process, a test.
It learns that from SQLite's C{PRAGMA data_version}, read on a connection of
its own before every use of the cache; in WAL mode (Comet's) that read takes
no lock a writer holds, so it never waits and may run in the reactor thread
(it reads the shared-memory WAL index, microseconds).  The watcher never
waits for a lock (C{timeout=0}): if SQLite answers busy, or anything else goes
wrong, the cache is not used for that request and the lookup goes to the
database as before.

The same cache keeps VM rows for L{comet.store.vms.VMs.get} (key: cluster and
name), on the same terms.

Revocation therefore stays immediate: a token revoked by any writer is gone
from the cache at the next request, before its lookup.  The price is that any
commit (an audit log entry, a task) empties the cache; reads do not.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

log = Logger()

#: Tokens remembered at most (the least recently used go first).
SIZE = 1024


class TokenCache:
    """
    Token hash -> user record, valid while the database file is unchanged.

    Use from one thread only (the reactor's): L{version} first, then L{get}
    or, after a lookup in the database, L{put} with the version read before it.

    @param path: the SQLite file (in WAL mode).
    """

    def __init__(self, path: str, size: int = SIZE):
        self._path = path
        self._size = size
        self._conn: sqlite3.Connection | None = None
        #: The data version the entries are valid for.
        self._version: int | None = None
        self._entries: OrderedDict[str, Any] = OrderedDict()

    def version(self) -> int | None:
        """
        The database's data version now; C{None} if it cannot be read without
        waiting (then the cache must not be used).  Every entry is dropped
        when it differs from the one the entries were cached at.
        """
        try:
            if self._conn is None:
                # No busy wait, ever: this runs in the reactor thread.
                self._conn = sqlite3.connect(self._path, timeout=0, isolation_level=None)
            (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error as e:
            log.debug("token cache not used: {error}", error=e)
            self.clear()
            return None
        if version != self._version:
            self._entries.clear()
            self._version = version
        return version

    def get(self, digest: str) -> Any | None:
        """The user cached for C{digest}, or C{None}; call L{version} first."""
        user = self._entries.get(digest)
        if user is not None:
            self._entries.move_to_end(digest)
        return user

    def put(self, digest: str, user: Any, version: int | None) -> None:
        """
        Remember C{user} for C{digest}, found by a lookup that began after
        L{version} answered C{version}: only if nothing was committed since.
        """
        if version is None or version != self._version or user is None:
            return
        if self.version() != version:
            return
        self._entries[digest] = user
        self._entries.move_to_end(digest)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def lookup(self, key: str, load: Callable[[], Deferred]) -> Deferred:
        """
        C{key}'s value: the cached one if nothing was committed since it was
        cached, else what C{load()} fires with (then cached, if nothing was
        committed meanwhile either).
        """
        version = self.version()
        if version is not None:
            value = self.get(key)
            if value is not None:
                return succeed(value)

        def found(value):
            self.put(key, value, version)
            return value

        return load().addCallback(found)

    def clear(self) -> None:
        """Forget every entry (also done by any commit to the file)."""
        self._entries.clear()
        self._version = None

    def close(self) -> None:
        self.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
