"""
Placement runs: every VM's cluster and host, grouped (C{GET /cluster} counts
its VMs' states from them), and the daemon's own moves that let a read of them
cost one row instead of every VM row.

Reading every VM row costs a query over the whole table (10,000 rows: tens of
milliseconds of SQLite, and 10,000 new strings).  While VMs start, each
placement moves the C{vms} generation, so the read cache has to read them
again at every C{GET /cluster}.  Most of those writes are the daemon's own
placements, and the writer knows exactly what each changed: so right after
committing one it notes a L{Move} (the generation before and after it, and
which VM went from which host to which).  A read then starts from the runs it
read last and applies the moves that lead from that generation to the one its
snapshot sees; only if they do not lead there exactly (something else was
written: a VM created or deleted, a cluster renamed, an operator's C{sqlite3},
another process) does it read every row.

A move is noted only after its commit, and only when it was the only row its
transaction counted (the generation moved by exactly one), so a chain of moves
that leads to the snapshot's generation is exactly what was written since.
"""

from __future__ import annotations

import threading

import attrs

#: C{(cluster, host, uuids)}: the VMs of a cluster on one host (C{None}: stopped).
Run = tuple[str, "str | None", tuple[str, ...]]


@attrs.frozen
class Move:
    """One committed placement change, the only write of its transaction."""

    #: The C{vms} generation before and after its transaction.
    before: int
    after: int
    cluster: str
    uuid: str
    source: str | None
    dest: str | None


def generation(conn) -> int:
    """The C{vms} generation in C{conn}'s transaction (L{comet.store._readcache})."""
    (value,) = conn.execute("SELECT value FROM generations WHERE name = 'vms'").fetchone()
    return value


def read_all(conn) -> tuple[Run, ...]:
    # One row per (cluster, host) with its VMs' uuids joined: a few rows to
    # step through instead of one per VM (each step gives up the GIL and must
    # win it back, slow while the reactor is busy).
    return tuple(
        (cluster, host, tuple(uuids.split(" ")))
        for cluster, host, uuids in conn.execute(
            "SELECT c.name, v.host, group_concat(v.uuid, ' ') FROM vms v"
            " JOIN clusters c ON c.id = v.cluster_id GROUP BY c.name, v.host"
        )
    )


def replay(runs: tuple[Run, ...], moves: list[Move]) -> tuple[Run, ...] | None:
    """
    C{runs} with C{moves} applied, in order; C{None} if one does not fit
    them (its VM is not where it says it came from).  Runs no move touches
    are the very same tuples (a caller keeps what it derived from them).
    """
    groups = {(cluster, host): uuids for cluster, host, uuids in runs}
    for move in moves:
        source = groups.get((move.cluster, move.source))
        if source is None or move.uuid not in source:
            return None
        left = tuple(u for u in source if u != move.uuid)
        if left:
            groups[(move.cluster, move.source)] = left
        else:
            del groups[(move.cluster, move.source)]
        key = (move.cluster, move.dest)
        groups[key] = groups.get(key, ()) + (move.uuid,)
    return tuple(
        (cluster, host, groups[(cluster, host)])
        for cluster, host in sorted(groups, key=lambda k: (k[0], k[1] is not None, k[1] or ""))
    )


class PlacementRuns:
    """
    The placement runs last read and the moves noted since: read them with
    L{read} in the reader thread, note moves with L{note} in the writer's.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._moves: list[Move] = []
        #: C{(generation, runs)} last read (touched by the reader thread only).
        self._last: tuple[int, tuple[Run, ...]] | None = None

    def note(self, move: Move) -> None:
        """Called by the writer right after C{move}'s transaction committed."""
        with self._lock:
            self._moves.append(move)

    def read(self, conn) -> tuple[Run, ...]:
        """The runs in C{conn}'s read transaction (run in the reader thread)."""
        now = generation(conn)
        runs = self._replayed(now)
        if runs is None:
            runs = read_all(conn)
        self._last = (now, runs)
        with self._lock:
            self._moves = [m for m in self._moves if m.after > now]
        return runs

    def _replayed(self, now: int) -> tuple[Run, ...] | None:
        """The last runs brought to generation C{now} by the moves, if they lead exactly there."""
        if self._last is None:
            return None
        at, runs = self._last
        if at == now:
            return runs
        with self._lock:
            moves = list(self._moves)
        chain = []
        for move in moves:
            if move.before == at and at < now:
                chain.append(move)
                at = move.after
        if at != now:
            return None
        return replay(runs, chain)
