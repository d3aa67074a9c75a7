"""
Live migration for tests on libvirt's test driver, which has none
(C{virDomainMigrate3}, job statistics and C{abortJob} are
C{VIR_ERR_NO_SUPPORT} there): L{Migrations} does on the real test-driver
hosts what a finished migration leaves (the domain defined and running, or
paused, on the destination; powered off and undefined on the source), through
the real L{comet.virt.Hypervisors}.  The migration itself is proven on QEMU
(tests/integration).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from comet.errors import Conflict
from comet.virt import PAUSED, RUNNING, HypervisorError, MigrationProgress


class Migrations:
    """
    Mixed into a wrapper of the real L{Hypervisors} kept as C{self._real}.

    @ivar migrations: C{(source, dest, domain)} of each migration that completed.
    @ivar hold: C{None}, or a L{Deferred} each migration waits for before it
        copies anything (while it waits, L{migration_progress} reports half
        the memory copied; L{abort_migration} fails it, as libvirt's cancel).
    @ivar fail: a reason every migration fails with, before it does anything.
    """

    #: Bytes of guest memory a migration reports.
    MEMORY = 256 * 1024 * 1024

    def _migrations_init(self):
        self.migrations: list[tuple[str, str, str]] = []
        self.hold: Deferred | None = None
        self.fail: str | None = None
        self.aborted = 0
        self._waiting: dict[tuple[str, str], Deferred] = {}

    async def migrate(self, source, dest, name, max_downtime_ms, timeout):
        real = self._real
        real.status(dest)  # NotFound for an unknown host
        state = await real.domain_state(source, name)
        if state not in (RUNNING, PAUSED):
            raise Conflict(f"domain {name!r} on compute host {source!r} is {state};"
                           " migrate needs it paused or running")
        if self.fail is not None:
            raise HypervisorError(f"migrating domain {name!r}: {self.fail}")
        if self.hold is not None:
            waiting = self._waiting[(source, name)] = Deferred()
            self.hold.addBoth(lambda result: waiting.called or waiting.callback(None))
            try:
                await waiting
            finally:
                self._waiting.pop((source, name), None)
        description = await real.describe(source, name, True)
        await real.define(dest, description.spec)
        await real.start(dest, name)
        if state == PAUSED:
            await real.suspend(dest, name)
        await real.destroy(source, name)
        await real.undefine(source, name)
        for key in [k for k in getattr(self, "plugged", {}) if k[:2] == (source, name)]:
            self.plugged[(dest, name, key[2])] = self.plugged.pop(key)
        self.migrations.append((source, dest, name))
        return state

    async def migration_progress(self, host, name, completed=False):
        await self._real.domain_state(host, name)  # NotFound
        if (host, name) not in self._waiting:
            return None
        return MigrationProgress(memory_total=self.MEMORY, memory_remaining=self.MEMORY // 2)

    async def abort_migration(self, host, name):
        await self._real.domain_state(host, name)  # NotFound
        waiting = self._waiting.get((host, name))
        if waiting is None:
            return False
        self.aborted += 1
        waiting.errback(HypervisorError("operation aborted: migration job: canceled by client"))
        return True


class Migrating(Migrations):
    """The real L{Hypervisors} with L{Migrations} (a C{wrap_hypervisors} for make_models)."""

    def __init__(self, real):
        #: The real L{Hypervisors} (for a test to patch).
        self.real = self._real = real
        self._migrations_init()

    def __getattr__(self, name):
        return getattr(self._real, name)

