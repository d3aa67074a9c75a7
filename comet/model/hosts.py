"""
Compute hosts: the configured libvirt hosts with what they report live, and
which of them an admin put in maintenance (kept in the database: placement
skips those hosts, for new placements and migrations alike).
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred

from comet.errors import CometError, NotFound
from comet.model.cpus import misfit
from comet.model.nics import PRIVATE
from comet.model.placement import Candidate, free_memory


#: A host's actions: C{maintenance} (on or off) always, C{evacuate} while in
#: maintenance (fenced or not: which one the host's state tells).
HOST_ACTIONS = ("maintenance", "evacuate")


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
    #: Whether an admin put it in maintenance (placement skips it).
    maintenance: bool = False

    @property
    def actions(self) -> list[str]:
        """The actions valid now (L{HOST_ACTIONS})."""
        return ["maintenance", "evacuate"] if self.maintenance else ["maintenance"]


class SharedRead:
    """
    One read shared by whoever asks while it runs, and never older than the
    asking: a caller gets the result of a read that began at or after its
    call.  A caller arriving while a read runs waits for the next one, which
    begins when the running one ends and is shared by everyone who arrived
    meanwhile.  So N concurrent callers cause at most two reads, and each
    still sees figures read after it asked.
    """

    def __init__(self, read):
        """@param read: C{read() -> Deferred or coroutine}, the read to share."""
        self._read = read
        self._running = False
        self._current: list[Deferred] = []
        self._next: list[Deferred] = []

    def __call__(self) -> Deferred:
        d: Deferred = Deferred()
        if self._running:
            self._next.append(d)
        else:
            self._current.append(d)
            self._start()
        return d

    def _start(self) -> None:
        self._running = True
        ensureDeferred(self._read()).addBoth(self._done)

    def _done(self, result) -> None:
        waiting, self._current, self._next = self._current, self._next, []
        self._running = False
        if self._current:
            self._start()
        for d in waiting:
            d.callback(result)


class HostModel:
    """
    Reads the compute hosts, live.  Placement reads them through
    L{figures}, shared by concurrent placements (a cluster start of 200 VMs
    reads each host once or twice, not 200 times).
    """

    def __init__(self, hypervisors, hosts_config, committed=None, maintenance=None, clock=None):
        """
        @param committed: C{async committed() -> {host: MiB}}, the memory given
            to the VMs Comet has placed on each host (its own records).
        @param maintenance: the L{comet.store.HostMaintenance} table, or
            C{None} (kept in memory only).
        @param clock: C{seconds()} (when a host went into maintenance).
        """
        self._hv = hypervisors
        self._committed = committed or _nothing_committed
        self._config = {h.name: h for h in hosts_config}
        self._order = [h.name for h in hosts_config]
        self._figures = SharedRead(self._read_figures)
        self._maintenance_table = maintenance
        self._clock = clock
        #: The hosts in maintenance, read from the table once (L{load}); the
        #: one daemon holding the database's lease is its only writer.
        self._maintenance: set[str] = set()
        self._loaded = maintenance is None

    def set_hosts(self, hosts_config) -> None:
        """The configured hosts are now C{hosts_config} (a configuration reload)."""
        self._config = {h.name: h for h in hosts_config}
        self._order = [h.name for h in hosts_config]

    def names(self) -> list[str]:
        return list(self._order)

    async def load(self) -> None:
        """Read which hosts are in maintenance (once; every later call is free)."""
        if self._loaded:
            return
        rows = await self._maintenance_table.in_maintenance()
        if not self._loaded:
            # (also hosts not configured now: a reload may add them again)
            self._maintenance = set(rows)
            self._loaded = True

    def in_maintenance(self, name: str) -> bool:
        """Whether C{name} is in maintenance (as last loaded: L{load})."""
        return name in self._maintenance

    async def set_maintenance(self, name: str, enabled: bool) -> Host:
        """
        Put host C{name} in maintenance (placement skips it from now on) or
        take it out; the host as it is now.  Written before it takes effect.

        @raise NotFound: there is no such host.
        """
        self.config(name)
        await self.load()
        if self._maintenance_table is not None:
            now = int(self._clock.seconds()) if self._clock is not None else 0
            await self._maintenance_table.set(name, enabled, now)
        if enabled:
            self._maintenance.add(name)
        else:
            self._maintenance.discard(name)
        return await self.get(name)

    def networks(self, name: str) -> frozenset[str]:
        """
        The networks host C{name} can put a NIC on: the bridges it offers by
        network name, and C{private} if it carries clusters' private
        networks (it has a tunnel address).
        """
        config = self.config(name)
        networks = {network for network, _ in config.bridges}
        if config.tunnel_address:
            networks.add(PRIVATE)
        return frozenset(networks)

    def offered_networks(self) -> frozenset[str]:
        """Every network some host offers a bridge for (C{private} aside)."""
        return frozenset(
            network for h in self._config.values() for network, _ in h.bridges)

    def bridges(self, name: str | None) -> tuple[tuple[str, str], ...]:
        """The bridges host C{name} offers (none when it is not, or no longer, configured)."""
        config = self._config.get(name)
        return config.bridges if config is not None else ()

    def config(self, name: str):
        try:
            return self._config[name]
        except KeyError:
            raise NotFound(f"compute host {name!r} does not exist") from None

    async def get(self, name: str, committed: dict[str, int] | None = None) -> Host:
        self.config(name)
        await self.load()
        if committed is None:
            committed = await self._committed()
        try:
            info = await self._hv.node_info(name)
        except CometError as e:
            info = e
        return self._host(name, info, committed)

    def _host(self, name: str, info, committed: dict[str, int]) -> Host:
        """The host from its C{node_info} answer (or the L{CometError} it raised)."""
        config = self._config[name]
        maintenance = name in self._maintenance
        if isinstance(info, CometError):
            status = self._hv.status(name)
            return Host(name, config.uri, "unreachable", status.reason or info.reason,
                        maintenance=maintenance)
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
            maintenance=maintenance,
        )

    async def list(self) -> list[Host]:
        await self.load()
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
                hosts.append(Host(name, self._config[name].uri, "unreachable",
                                  value.getErrorMessage(), maintenance=name in self._maintenance))
        return hosts

    def figures(self) -> Deferred:
        """
        Every host's C{node_info} answer (or the L{CometError} it raised), by
        name, from a read that begins at or after this call and is shared
        with every concurrent caller (see L{SharedRead}).  Ask before
        waiting for the placement lock, so that the placements queued behind
        it share one read.
        """
        return self._figures()

    async def _read_figures(self) -> dict:
        async def one(name):
            try:
                return await self._hv.node_info(name)
            except CometError as e:
                return e

        results = await DeferredList(
            [ensureDeferred(one(name)) for name in self._order], consumeErrors=True
        )
        return {
            name: value if ok else CometError(value.getErrorMessage())
            for name, (ok, value) in zip(self._order, results)
        }

    async def candidates(self, figures: Deferred | None = None,
                         cpu_model: str | None = None) -> list[Candidate]:
        """
        The connected hosts not in maintenance, for placement, in
        configuration order.  The
        memory committed to Comet's placed VMs is read now (its own records,
        so a placement made just before counts); the hosts' own figures come
        from C{figures} (a L{figures} Deferred asked earlier), or are read now.
        The guest CPUs a host offers are read (once per connection: see
        L{comet.virt.Hypervisors.cpu_models}) only where they matter: for a
        VM that needs C{cpu_model}, or on a host with a C{cpu_mode}.
        """
        infos = await (figures if figures is not None else self.figures())
        await self.load()
        committed = await self._committed()
        hosts = [self._host(name, infos[name], committed) for name in self._order]
        usable = [h for h in hosts if h.state == "connected" and not h.maintenance]
        # Only where the CPUs matter: a placement runs once per start, under
        # the placing lock, so at 100 hosts a read (a coroutine and a
        # Deferred) per host per start held every other request back.
        asked = [h.name for h in usable if cpu_model is not None or self._config[h.name].cpu_mode]
        offered = {}
        if asked:
            answers = await DeferredList(
                [ensureDeferred(self._host_cpus(name, cpu_model)) for name in asked])
            offered = {name: cpus for name, (_, cpus) in zip(asked, answers)}
        return [
            Candidate(h.name, h.cpus, h.memory, h.memory_free, self.networks(h.name),
                      self._config[h.name].cpu_mode, offered.get(h.name))
            for h in usable
        ]

    async def _host_cpus(self, name: str, cpu_model: str | None):
        """Host C{name}'s L{comet.virt.HostCpus} if placement needs them; else (or unread) C{None}."""
        if cpu_model is None and not self._config[name].cpu_mode:
            return None
        try:
            return await self._hv.cpu_models(name)
        except CometError:
            return None

    async def cpu_misfit(self, name: str, cpu_model: str | None) -> str | None:
        """Why host C{name} cannot run a VM that needs C{cpu_model}; C{None} if it can."""
        return misfit(self.config(name).cpu_mode, await self._host_cpus(name, cpu_model),
                      cpu_model)

    async def max_cpus(self) -> int | None:
        """
        The most CPUs any connected host has (C{None} if none is connected),
        in maintenance or not: maintenance is temporary, a VM's size is not.
        """
        infos = await self.figures()
        cpus = [info.cpus for info in infos.values() if not isinstance(info, CometError)]
        return max(cpus) if cpus else None


async def _nothing_committed() -> dict[str, int]:
    return {}
