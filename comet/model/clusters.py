"""
Clusters: named groups of VMs.

A cluster's C{state} is derived from its VMs' live states, never stored: a
cluster with no VMs is C{empty}, with every VM running C{running}, with none
running C{stopped}, and C{partial} otherwise.

L{CLUSTER_ACTIONS} is the clusters' state machine: which action is valid in
which state.  It drives both the 409 for an action that is not
(L{ClusterModel.check_action}) and the actions a cluster offers
(L{Cluster.actions}), so the two cannot disagree.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime

from comet.errors import Conflict, InvalidInput
from comet.model.events import or_silent
from comet.names import check_name
from comet.store import ClusterRecord, Clusters


#: What a cluster's C{state} can be (L{cluster_state}).
STATES = ("running", "stopped", "partial", "empty")

#: Cluster action (on every VM of the cluster, as a task) -> the states it is valid in.
CLUSTER_ACTIONS: dict[str, frozenset[str]] = {
    "start": frozenset({"stopped", "partial"}),
    "stop": frozenset({"running", "partial", "stopped"}),
}


@attrs.frozen
class Cluster:
    name: str
    description: str
    #: Seconds since the epoch.
    created: int
    #: The live state of each of its VMs (C{running}, C{paused}, C{shutoff}, ...).
    vm_states: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        return cluster_state(self.vm_states)

    @property
    def vms(self) -> int:
        return len(self.vm_states)

    @property
    def actions(self) -> list[str]:
        """The actions valid in its state (L{CLUSTER_ACTIONS})."""
        return [a for a, states in CLUSTER_ACTIONS.items() if self.state in states]


def conflict(cluster: Cluster, action: str) -> Conflict:
    """The 409 for C{action} on C{cluster} in a state it is not valid in."""
    return Conflict(f"cluster {cluster.name!r} is {cluster.state}; {action} is not possible")


def cluster_state(vm_states: Sequence[str]) -> str:
    """The state of a cluster whose VMs are in C{vm_states}."""
    if not vm_states:
        return "empty"
    running = tuple(vm_states).count("running")
    if running == len(vm_states):
        return "running"
    if running == 0:
        return "stopped"
    return "partial"


#: Looks up the live states of the VMs of the cluster with the given record.
VMStates = Callable[[ClusterRecord], Awaitable[tuple[str, ...]]]


async def _no_vms(record: ClusterRecord) -> tuple[str, ...]:
    return ()


def validate_name(kind: str, name: object) -> str:
    """Return C{name} if it follows the name rule; else raise L{InvalidInput}."""
    if not check_name(name):
        raise InvalidInput(
            f"{kind} name {name!r} is invalid: it must match"
            " ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
        )
    return name  # type: ignore[return-value]


class ClusterModel:
    """
    What a client may do with clusters.

    @param vm_states: how to read a cluster's VM states (by default: no
        VMs); the daemon's reads libvirt (L{comet.model.vms.VMModel.states}).
    @param all_vm_states: the same for every cluster in one pass (used by
        L{list}, so that C{GET /cluster} lists each host once, not once per
        cluster), by cluster name; C{None}: one L{vm_states} per cluster.
    @param on_delete: called with the record before a cluster is deleted
        with C{force}, to power off and delete its VMs.
    @param events: the L{comet.model.events.EventLog} told of each change.
    """

    def __init__(
        self,
        clusters: Clusters,
        clock: IReactorTime,
        vm_states: VMStates = _no_vms,
        all_vm_states: Callable[[], Awaitable[dict[str, tuple[str, ...]]]] | None = None,
        on_delete: Callable[[ClusterRecord], Awaitable[None]] | None = None,
        events=None,
    ):
        self._clusters = clusters
        self._events = or_silent(events)
        self._clock = clock
        self.vm_states = vm_states
        self.all_vm_states = all_vm_states
        self.on_delete = on_delete

    async def _cluster(self, record: ClusterRecord) -> Cluster:
        states = await self.vm_states(record)
        return Cluster(record.name, record.description, record.created, tuple(states))

    async def list(self) -> list[Cluster]:
        records = await self._clusters.list()
        if self.all_vm_states is None:
            return [await self._cluster(r) for r in records]
        # One pass over every host for all clusters, not one per cluster.
        states = await self.all_vm_states()
        return [
            Cluster(r.name, r.description, r.created, states.get(r.name, ()))
            for r in records
        ]

    async def get(self, name: str) -> Cluster:
        return await self._cluster(await self._clusters.get(name))

    async def check_action(self, name: str, action: str) -> Cluster:
        """
        The cluster, when C{action} (one of L{CLUSTER_ACTIONS}) is valid in
        its state; else the L{conflict}.
        """
        cluster = await self.get(name)
        if action not in cluster.actions:
            raise conflict(cluster, action)
        return cluster

    async def create(self, name: str, description: str = "") -> Cluster:
        validate_name("cluster", name)
        record = await self._clusters.create(name, description, int(self._clock.seconds()))
        self._events.emit("cluster.created", {"name": record.name})
        return await self._cluster(record)

    async def update(
        self, name: str, new_name: str | None = None, description: str | None = None
    ) -> Cluster:
        if new_name is not None:
            validate_name("cluster", new_name)
        record = await self._clusters.update(name, new_name, description)
        self._events.emit("cluster.changed", {"name": record.name},
                          **({"previous": {"name": name}} if record.name != name else {}))
        return await self._cluster(record)

    async def delete(self, name: str, force: bool = False) -> None:
        record = await self._clusters.get(name)
        states = await self.vm_states(record)
        if states:
            if not force:
                raise Conflict(
                    f"cluster {name!r} has {len(states)} VM(s); delete them first"
                    ' or pass {"force": true}'
                )
            if self.on_delete is not None:
                await self.on_delete(record)
        await self._clusters.delete(name)
        self._events.emit("cluster.deleted", {"name": name})
