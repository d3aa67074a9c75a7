"""
L{Hypervisors}' live migrations: moving a running domain between two of
its hosts, watching the job and cancelling it.  Apart because a migration is
the one call that holds connections to two hosts at once (the destination's
lease lasts as long as the source's call), and the rest of the class speaks
to one host per call.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail

from comet.errors import NotFound
from comet.virt import _operations
from comet.virt._values import MigrationProgress


class _Migrations:
    """
    Mixed into L{comet.virt._hypervisors.Hypervisors}, whose host plumbing
    (C{_host}, C{_connected}, C{_call}, C{_domain_call}) it uses.
    """

    def migrate(self, source: str, dest: str, name: str, max_downtime_ms: int,
                timeout: float) -> Deferred[str]:
        """
        Live-migrate running or paused domain C{name} from C{source} to
        C{dest} over the connections Comet holds to both (one
        C{virDomainMigrate3} in the pool: see L{_operations.migrate}), the
        guest paused at most C{max_downtime_ms} for its last copy.  Fires
        with its state on C{dest} once it runs there; fails with it still
        on C{source} (an L{abort_migration}, a refusal).  The call may take
        C{timeout} seconds (not C{libvirt_timeout}): the caller cancels the
        job earlier with L{abort_migration}.

        @raise NotFound: an unknown host or domain.
        @raise Conflict: the domain is not running or paused.
        """
        try:
            to = self._host(dest)
            self._host(source)
        except NotFound:
            return fail()
        what = f"migrating domain {name!r} from {source!r} to {dest!r}"

        async def run():
            target = await self._connected(to)
            # A destination connection of the call's own, in use until the
            # call's thread returns (not when its caller stops waiting).
            lease = target.take()
            target.running += 1

            def migrate(conn, host_name, *args):
                return _operations.migrate(conn, host_name, name, lease.conn, dest, *args)

            return await self._call(
                source, what, migrate, max_downtime_ms, to.config.migration_address,
                timeout=timeout, extra=((target, lease),))

        return Deferred.fromCoroutine(run())

    def migration_progress(self, host: str, name: str,
                           completed: bool = False) -> Deferred[MigrationProgress | None]:
        """
        The migration job of domain C{name} on C{host} (its source), or
        C{None} when it has none; C{completed}: the last one that finished
        (read on the destination: its downtime and total time).
        """
        return self._domain_call(host, name, "reading the migration of",
                                 _operations.migration_progress, completed)

    def abort_migration(self, host: str, name: str) -> Deferred[bool]:
        """
        Cancel the migration of domain C{name} from C{host}: it keeps
        running there.  Whether there was one.
        """
        return self._domain_call(host, name, "cancelling the migration of",
                                 _operations.abort_migration)
