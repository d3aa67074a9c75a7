"""Host rows: the compute hosts in maintenance (the hosts themselves are configured)."""

from __future__ import annotations

from comet.store._db import Database


def _in_maintenance(conn) -> dict[str, int]:
    return {row[0]: row[1] for row in conn.execute("SELECT host, since FROM host_maintenance")}


def _set(conn, host: str, enabled: bool, now: int) -> None:
    if enabled:
        conn.execute("INSERT OR IGNORE INTO host_maintenance (host, since) VALUES (?, ?)",
                     (host, now))
    else:
        conn.execute("DELETE FROM host_maintenance WHERE host = ?", (host,))


class HostMaintenance:
    """The C{host_maintenance} table."""

    def __init__(self, db: Database):
        self._db = db

    def in_maintenance(self):
        """Deferred: host name -> since when (epoch seconds) it is in maintenance."""
        return self._db.transact(_in_maintenance)

    def set(self, host: str, enabled: bool, now: int):
        """Put C{host} in maintenance (kept since its first time) or take it out."""
        return self._db.transact(_set, host, enabled, now)
