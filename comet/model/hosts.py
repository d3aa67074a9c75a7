"""
Compute hosts: the configured libvirt hosts with what they report live.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import DeferredList, ensureDeferred

from comet.errors import CometError, NotFound
from comet.model.placement import Candidate, free_memory


@attrs.frozen
class Host:
    name: str
    uri: str
    #: C{connected} or C{unreachable}.
    state: str
    #: Why it is unreachable (C{""} when connected).
    reason: str = ""
    cpus: int | None = None
    #: MiB.
    memory: int | None = None
    memory_free: int | None = None
    #: Domains the host knows (Comet's and others).
    vms: int | None = None


class HostModel:
    """Reads the compute hosts, live."""

    def __init__(self, hypervisors, hosts_config, committed=None):
        """
        @param committed: C{async committed() -> {host: MiB}}, the memory given
            to the VMs Comet has placed on each host (its own records).
        """
        self._hv = hypervisors
        self._committed = committed or _nothing_committed
        self._config = {h.name: h for h in hosts_config}
        self._order = [h.name for h in hosts_config]

    def names(self) -> list[str]:
        return list(self._order)

    def config(self, name: str):
        try:
            return self._config[name]
        except KeyError:
            raise NotFound(f"compute host {name!r} does not exist") from None

    async def get(self, name: str, committed: dict[str, int] | None = None) -> Host:
        config = self.config(name)
        if committed is None:
            committed = await self._committed()
        try:
            info = await self._hv.node_info(name)
        except CometError as e:
            status = self._hv.status(name)
            return Host(name, config.uri, "unreachable", status.reason or e.reason)
        # libvirt's test driver makes up its free-memory figure: judge its
        # hosts by commitments alone.
        kernel_free = 0 if config.domain_type == "test" else info.memory_free_mb
        return Host(
            name,
            config.uri,
            "connected",
            cpus=info.cpus,
            memory=info.memory_mb,
            memory_free=free_memory(info.memory_mb, kernel_free, committed.get(name, 0)),
            vms=info.domains,
        )

    async def list(self) -> list[Host]:
        committed = await self._committed()
        results = await DeferredList(
            [ensureDeferred(self.get(name, committed)) for name in self._order],
            consumeErrors=True,
        )
        hosts = []
        for name, (ok, value) in zip(self._order, results):
            if ok:
                hosts.append(value)
            else:
                hosts.append(Host(name, self._config[name].uri, "unreachable", value.getErrorMessage()))
        return hosts

    async def candidates(self) -> list[Candidate]:
        """The connected hosts, for placement, in configuration order."""
        return [
            Candidate(h.name, h.cpus, h.memory, h.memory_free)
            for h in await self.list()
            if h.state == "connected"
        ]

    async def max_cpus(self) -> int | None:
        """The most CPUs any connected host has (C{None} if none is connected)."""
        cpus = [c.cpus for c in await self.candidates()]
        return max(cpus) if cpus else None


async def _nothing_committed() -> dict[str, int]:
    return {}
