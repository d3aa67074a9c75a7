"""
Caches of database reads that can never outlive a change to what they read.

Handing a read to a database thread costs more than its SQL (a thread hand-off
each way, and under load a place in the queue behind every other read), on
every request.  A L{ReadCache} keeps the answers in memory and throws them all
away as soon as what they were read from may have changed.  It learns that
from a counter in the C{generations} table, read on a connection of its own
before every use.  Triggers (migration 8) add one to the counter for every row
inserted, updated or deleted in its tables, by any writer: the daemon,
C{comet-admin} in another process, an operator with C{sqlite3}.

  - C{users}: the users and their API tokens.  A token revoked or a role
    changed is seen at the very next request.
  - C{vms}: the VM rows with their clusters' and templates' names.

The many other commits of a busy daemon (intents, locks, tasks, the audit
log) leave both alone: during a start of 50 VMs, tokens and the cluster list
are still answered from memory until a VM is placed.  (The caches first
followed SQLite's C{PRAGMA data_version}, which moves with any commit: they
were empty exactly when they were needed.)

The daemon's own placements (a VM's C{host} set or cleared, many at once
while VMs start) are written through (L{ReadCache.written}): the writer notes,
right after the commit, which generation it moved from and to and which
entries it changed, and when the counter is next read only those are
dropped, not every other VM's record or the cluster list.  Only a chain of
such notes that leads exactly to the counter's new value is trusted: any
other writer breaks it, and everything is dropped as before.

In WAL mode (Comet's) the counter's read takes no lock a writer holds, so it
never waits and may run in the reactor thread (microseconds: the
shared-memory WAL index and a page the file cache holds).  The watcher never
waits for a lock (C{timeout=0}): if SQLite answers busy, or anything else goes
wrong, the cache is not used for that read and it goes to the database.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict, deque
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

log = Logger()

#: Entries remembered at most (the least recently used go first): a row for
#: each of a few thousand VMs, or as many tokens.
SIZE = 4096

_GENERATION = "SELECT value FROM generations WHERE name = ?"


class ReadCache:
    """
    Key -> value read from the database, valid while the version is unchanged.

    Use from one thread only (the reactor's): L{lookup}; or L{version} first,
    then L{get} or, after a read from the database, L{put} with the version
    read before it.

    @param path: the SQLite file (in WAL mode).
    @param generation: the C{generations} counter whose move makes every entry
        stale (see the module's docstring).
    """

    def __init__(self, path: str, generation: str, size: int = SIZE):
        self._path = path
        self._size = size
        self._generation = generation
        self._conn: sqlite3.Connection | None = None
        #: The version the entries are valid for.
        self._version: int | None = None
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        #: C{(before, after, keys)} noted by the writer (L{written}), oldest first.
        self._written: deque[tuple[int, int, tuple]] = deque()

    def written(self, before: int, after: int, keys) -> None:
        """
        From any thread (the database's, right after a commit): a transaction
        moved the generation from C{before} to C{after} and changed only the
        entries C{keys} (absent ones included).  When the version is next read
        and this explains the move, only those are dropped.
        """
        self._written.append((before, after, tuple(keys)))

    def version(self) -> int | None:
        """
        The generation's value now; C{None} if it cannot be read without
        waiting (then the cache must not be used).  Every entry is dropped
        when it differs from the one the entries were cached at.
        """
        try:
            if self._conn is None:
                # No busy wait, ever: this runs in the reactor thread.
                self._conn = sqlite3.connect(self._path, timeout=0, isolation_level=None)
            (version,) = self._conn.execute(_GENERATION, (self._generation,)).fetchone()
        except (sqlite3.Error, TypeError) as e:  # TypeError: no such counter row
            log.debug("read cache not used: {error}", error=e)
            self.clear()
            return None
        if version != self._version:
            self._catch_up(version)
        return version

    def _catch_up(self, version: int) -> None:
        """Move to C{version}: through the writes noted, if they lead there; else empty."""
        written = self._written
        while written and written[0][1] <= version:
            before, after, keys = written.popleft()
            if self._version is not None and before == self._version:
                for key in keys:
                    self._entries.pop(key, None)
                self._version = after
        if version != self._version:
            self._entries.clear()
            self._version = version

    def get(self, key: Any) -> Any | None:
        """The value cached for C{key}, or C{None}; call L{version} first."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: Any, value: Any, version: int | None) -> None:
        """
        Remember C{value} for C{key}, read by a lookup that began after
        L{version} answered C{version}: only if the version has not moved since.
        """
        if version is None or version != self._version or value is None:
            return
        if self.version() != version:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def lookup(self, key: Any, load: Callable[[], Deferred]) -> Deferred:
        """
        C{key}'s value: the cached one if the version has not moved since it
        was cached, else what C{load()} fires with (then cached, if the version
        did not move meanwhile either).
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
        """Forget every entry (also done whenever the version moves)."""
        self._entries.clear()
        self._version = None

    def close(self) -> None:
        self.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
