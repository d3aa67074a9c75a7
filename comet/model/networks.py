"""
Clusters' private networks on the compute hosts.

A cluster whose VMs have C{private} NICs has a VNI (L{comet.store.VMs}); on
each host where one of those VMs is placed, a bridge C{cometb<VNI>} joined
to the other hosts by a VXLAN device C{cometv<VNI>}
(L{comet.remote.netdev}).  A host I{needs} a cluster's network while a VM
of the cluster with a private NIC is placed there (placement comes before
the network in a start and goes before it in a stop) or migrates there
(L{Networks.claim}, in memory: a crash ends the migration, whose repair
settles the placement).

Set-up and tear-down are operations (L{comet.model.operations.net_up},
L{comet.model.operations.net_down}); both take the (host, VNI)'s lock and
decide on what is needed under it, so a start and a stop of two VMs of one
cluster on one host never undo each other.  The reconciler's L{sweep}
leaves each host holding exactly the networks it needs.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from twisted.internet.defer import DeferredLock, gatherResults
from twisted.logger import Logger

from comet.errors import CometError, Conflict
from comet.remote.netdev import HostNetwork

log = Logger()


def net_object(host: str, vni: int) -> str:
    """The intents' object of a host's network of a VNI."""
    return f"net:{host}:{vni}"


def parse_object(obj: str) -> tuple[str, int]:
    """L{net_object} read back."""
    _, host, vni = obj.split(":")
    return host, int(vni)


class Networks:
    """
    The hosts' private networks.

    @param hosts_config: the C{[[hosts]]}.
    @param runners: a host's ssh address -> its L{comet.remote.IRunner}.
    @param vms: the C{vms} table (L{comet.store.VMs}).
    @param vnis: C{[network] vni_range}: the sweep removes devices of these
        VNIs only (another Comet's, on hosts shared with a disjoint range,
        are not its own to judge).
    """

    def __init__(self, hosts_config, runners: dict, vms, vnis: range = range(1, 16777216)):
        tunnels = [h.tunnel_address for h in hosts_config if h.tunnel_address]
        self._hosts = {
            h.name: HostNetwork(runners[h.ssh.rpartition("@")[2]], h.tunnel_address,
                                [t for t in tunnels if t != h.tunnel_address])
            for h in hosts_config if h.tunnel_address and h.ssh
        }
        self._vms = vms
        self._vnis = vnis
        self._locks: dict[tuple[str, int], DeferredLock] = {}
        self._claims: Counter[tuple[str, int]] = Counter()

    def host(self, name: str) -> HostNetwork:
        """Host C{name}'s devices; L{Conflict} if it carries no private networks."""
        try:
            return self._hosts[name]
        except KeyError:
            raise Conflict(f"compute host {name!r} carries no private networks"
                           " (it has no tunnel_address and ssh)") from None

    def hosts(self) -> list[str]:
        return list(self._hosts)

    def lock(self, host: str, vni: int) -> DeferredLock:
        """The lock every change of C{host}'s network of C{vni} takes."""
        return self._locks.setdefault((host, vni), DeferredLock())

    def claim(self, host: str, vni: int) -> None:
        """C{host} needs the network (a VM migrates there) until L{unclaim}."""
        self._claims[(host, vni)] += 1

    def unclaim(self, host: str, vni: int) -> None:
        self._claims[(host, vni)] -= 1
        if self._claims[(host, vni)] <= 0:
            del self._claims[(host, vni)]

    async def needed(self, host: str) -> set[int]:
        """The VNIs C{host} needs now."""
        placed = await self._vms.private_placements(host)
        return {vni for _, vni in placed} | {vni for h, vni in self._claims if h == host}

    async def stop(self) -> None:
        """Stop every host's runner."""
        await gatherResults([network.runner.stop() for network in self._hosts.values()],
                            consumeErrors=True)

    async def settle(self, host: str, vni: int) -> str:
        """
        Under the lock: make or remove C{host}'s network of C{vni} as it is
        needed or not; what was done, or C{""} if nothing.
        """
        async with self.lock(host, vni):
            return await self.settle_locked(host, vni)

    async def settle_locked(self, host: str, vni: int) -> str:
        network = self.host(host)
        if vni in await self.needed(host):
            made = [what for what, fn in (("bridge", network.add_bridge),
                                          ("tunnel", network.add_tunnel)) if await fn(vni)]
            return f"made the {' and '.join(made)} of VNI {vni} on {host}" if made else ""
        removed = [what for what, role in (("tunnel", "vxlan"), ("bridge", "bridge"))
                   if await network.remove(vni, role)]
        return f"removed the {' and '.join(removed)} of VNI {vni} from {host}" if removed else ""

    async def sweep(self, unsettled: Iterable[int] = ()) -> list[str]:
        """
        Each host's networks made to match what it needs: the missing or
        half-made made, the unneeded removed, except those of C{unsettled}
        VNIs (a VM of the cluster has an operation not yet repaired: where
        it runs is not known).  A host that does not answer is left for the
        next pass.  One sentence per change.
        """
        unsettled = set(unsettled)
        repairs: list[str] = []
        for host, network in self._hosts.items():
            try:
                devices = await network.devices()
                needed = await self.needed(host)
                present = {d.vni for d in devices.values()}
                complete = {d.vni for d in devices.values()
                            if d.role == "vxlan" and d.up and d.master == f"cometb{d.vni}"}
                complete &= {d.vni for d in devices.values() if d.role == "bridge" and d.up}
                unneeded = {v for v in present - needed - unsettled if v in self._vnis}
                for vni in sorted((needed - complete) | unneeded):
                    what = await self.settle(host, vni)
                    if what:
                        log.warn("reconciler: private network: {what}", what=what)
                        repairs.append(f"private network: {what}")
            except CometError as e:
                log.warn("reconciler: the private networks of {host} cannot be checked now"
                         " ({why})", host=host, why=e.reason)
        return repairs
