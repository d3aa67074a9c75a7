"""
Storage servers: the ZFS and tgt adapters of each configured server, over
its runner (L{comet.remote.IRunner}), and whether it answers.
"""

from __future__ import annotations

from typing import Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from comet.errors import CometError, Conflict, NotFound, Unavailable
from comet.remote import zfs as _zfs
from comet.remote.tgt import TGT
from comet.remote.zfs import ZFS

log = Logger()

#: Seconds the reachability probe of a storage server may take.
PROBE_TIMEOUT = 5.0


class Server:
    """One storage server: its runner, and ZFS and tgt over it."""

    def __init__(self, runner, owner: str):
        self.runner = runner
        self.zfs = ZFS(runner, owner=owner)
        self.tgt = TGT(runner)


class Servers:
    """
    The storage servers Comet has a runner for.

    @param runners: storage server address -> L{comet.remote.IRunner}.
    @param owner: the value of the C{comet:owner} tag Comet puts on what it makes.
    """

    def __init__(self, runners: Mapping[str, object], owner: str = "comet"):
        self._runners = dict(runners)
        self._owner = owner
        self._servers = {host: Server(r, owner) for host, r in self._runners.items()}

    def hosts(self) -> list[str]:
        """The servers' addresses, in configuration order (those a reload added last)."""
        return list(self._servers)

    def __contains__(self, host: str) -> bool:
        return host in self._servers

    def server(self, host: str) -> Server:
        """Server C{host}; L{NotFound} if it is not configured."""
        try:
            return self._servers[host]
        except KeyError:
            raise NotFound(f"storage server {host!r} does not exist") from None

    def add(self, host: str, runner) -> None:
        """Storage server C{host}, reached through C{runner}, is configured now (a reload)."""
        self._runners[host] = runner
        self._servers[host] = Server(runner, self._owner)

    async def remove(self, host: str) -> None:
        """Storage server C{host} is no longer configured: its runner is stopped."""
        self._servers.pop(host, None)
        runner = self._runners.pop(host, None)
        if runner is not None:
            await runner.stop()

    async def stop(self) -> None:
        """Stop every runner (kills commands still running)."""
        for runner in self._runners.values():
            try:
                await runner.stop()
            except Exception:
                log.failure("stopping the runner of {host}", host=getattr(runner, "host", "?"))

    async def state(self, host: str) -> str:
        """C{reachable} or C{unreachable}: a quick C{zpool list}."""
        server = self.server(host)
        try:
            await server.runner.run(_zfs.pool_list_argv(), timeout=PROBE_TIMEOUT)
        except Unavailable:
            return "unreachable"
        except CometError:
            # It answered (with an error): it is reachable.
            return "reachable"
        return "reachable"

    async def zpools(self, host: str) -> list:
        """The zpools of a server (L{comet.remote.zfs.Pool}); 503 if it does not answer."""
        return await self.server(host).zfs.pool_list()

    async def targets(self, host: str) -> list:
        """The tgt targets on C{host} now (L{comet.remote.tgt.Target}); 503 if it does not answer."""
        return await self.server(host).tgt.targets()


async def undo(d: Deferred, what: str) -> bool:
    """
    Await the undo step C{d} of a failed change; a failure of its own is
    logged, not raised.

    @return: whether it was undone (an operation whose undo failed leaves
        its intent for the reconciler's repair).
    """
    try:
        await d
    except Exception:
        log.failure("undo step failed: {what}", what=what)
        return False
    return True


async def destroy_all(zfs, names) -> None:
    """
    Destroy zvols C{names} with their snapshots, clones before their
    origins: whatever ZFS refuses for a dependent clone is tried again
    after the others, until a pass destroys nothing (then its L{Conflict}).
    """
    names = list(names)
    while names:
        left, error = [], None
        for name in names:
            try:
                await zfs.destroy(name, recursive=True)
            except NotFound:
                pass
            except Conflict as e:
                left.append(name)
                error = e
        if len(left) == len(names):
            raise error
        names = left
