"""
What Comet means: clusters, VMs, templates, hosts, storage and tasks.

The model is async functions over the store and the adapters; it raises the
domain errors of L{comet.errors} and knows nothing of HTTP.  L{Models} is the
bag of model objects the web layer is handed.
"""

from __future__ import annotations

from typing import Any

import attrs

from comet.model.clusters import ClusterModel
from comet.model.console import ConsoleModel
from comet.model.events import EventLog, VMStateEvents
from comet.model.evacuation import HostEvacuations
from comet.model.health import Health
from comet.model.hosts import HostModel
from comet.model.intents import Intents
from comet.model.leftovers import Leftovers
from comet.model.locks import Locks
from comet.model.operations import Context
from comet.model.reconcile import Reconciler
from comet.model.serverwatch import ServerWatch
from comet.model.storage import StorageModel, VMSnapshotModel, VMStorageModel
from comet.model.tasks import TaskRunner, describe_target
from comet.model.networks import Networks
from comet.model.templates import TemplateModel
from comet.model.vm_nics import VMNicModel
from comet.model.vms import VMModel


@attrs.define
class Models:
    clusters: ClusterModel
    tasks: TaskRunner
    hosts: HostModel
    templates: TemplateModel
    vms: VMModel
    storage: StorageModel | None = None
    vm_storages: VMStorageModel | None = None
    vm_snapshots: VMSnapshotModel | None = None
    console: ConsoleModel | None = None
    intents: Intents | None = None
    reconciler: Reconciler | None = None
    #: Storage servers' reachability and boots; restores the exports of one that came back.
    serverwatch: ServerWatch | None = None
    #: This process's locks and daemon lease (L{comet.model.locks}).
    locks: Locks | None = None
    #: Users, API tokens and the audit log (L{comet.store.users.Users}).
    users: Any = None
    #: What every operation runs against (L{comet.model.operations.Context}):
    #: the tables, the hypervisors, storage; for the manhole and tests to look at.
    context: Context | None = None
    #: What C{/health} answers (L{comet.model.health.Health}).
    health: Health | None = None
    #: This daemon's Prometheus registry and instruments (L{comet.metrics.Metrics}).
    metrics: Any = None
    #: What changed, for C{GET /events} (L{comet.model.events.EventLog}).
    events: EventLog | None = None
    #: Turns libvirt's lifecycle and host events into events (L{VMStateEvents}).
    vm_state_events: VMStateEvents | None = None
    #: Hosts' evacuations (L{comet.model.evacuation.HostEvacuations}).
    evacuations: HostEvacuations | None = None
    #: The hosts' private networks (L{comet.model.networks.Networks}).
    networks: Networks | None = None
    #: VMs' NICs, added and removed while they run (L{comet.model.vm_nics.VMNicModel}).
    vm_nics: VMNicModel | None = None


def _host_runners(clock, config, metrics) -> dict:
    """An L{comet.remote.SSHRunner} for each compute host with C{ssh}, by its address."""
    from comet.config import StorageServerConfig
    from comet.remote import SSHRunner

    runners = {}
    for h in config.hosts:
        if h.ssh:
            user, _, address = h.ssh.rpartition("@")
            login = StorageServerConfig(host=address, ssh_user=user or "root",
                                        ssh_port=h.ssh_port, ssh_identity=h.ssh_identity,
                                        ssh_known_hosts=h.ssh_known_hosts)
            runners[address] = SSHRunner(clock, login, config.storage, metrics=metrics,
                                         role="compute host")
    return runners


def make_models(db, hypervisors, config, clock, runners=None,
                address=describe_target, metrics=None, host_runners=None) -> Models:
    """
    The models of a daemon over C{db} and the libvirt adapter, wired together.

    @param address: how a task's record writes what the task is about (a
        L{comet.model.tasks.Target}); the daemon gives the API's URIs
        (L{comet.web.tasks.target_uri}), by default it is written in words.

    @param runners: storage server address -> L{comet.remote.IRunner}; by
        default one L{comet.remote.SSHRunner} per configured storage server
        (C{clock} is then the reactor).  L{StorageModel.stop} stops them.

    @param host_runners: a compute host's ssh address (C{[[hosts]] ssh})
        -> L{comet.remote.IRunner}, for its private networks; by default an
        L{comet.remote.SSHRunner} for each host with C{ssh}.

    @param metrics: the daemon's L{comet.metrics.Metrics} (by default a new
        one, with its own registry); it exports what these models know.
    """
    from comet.metrics import Metrics
    from comet.store import Clusters, HostMaintenance, Snapshots, Storage, Tasks, Templates, VMs
    from comet.store import Intents as IntentTable
    from comet.store import Locks as LockTable
    from comet.store.users import Users
    from comet.virt import CachedStates
    if metrics is None:
        metrics = Metrics()
    events = EventLog(clock)
    tasks = TaskRunner(Tasks(db), clock, address, events=events)
    intents = Intents(IntentTable(db), clock)
    locks = Locks(LockTable(db), clock)
    vm_table = VMs(db)
    hosts = HostModel(hypervisors, config.hosts, vm_table.committed,
                      maintenance=HostMaintenance(db), clock=clock)
    if runners is None:
        from comet.remote import SSHRunner

        runners = {
            s.host: SSHRunner(clock, s, config.storage, metrics=metrics)
            for s in config.storageservers
        }
    if host_runners is None:
        host_runners = _host_runners(clock, config, metrics)
    networks = Networks(config.hosts, host_runners, vm_table, config.network.vnis())
    storage = StorageModel(
        Storage(db), runners, config, hypervisors, tasks, clock, vms=VMs(db),
        snapshots=Snapshots(db), intents=intents, locks=locks, events=events,
        host_runners=host_runners,
    )
    templates = TemplateModel(Templates(db), hosts, clock, check_disk=storage.disks.check_disk,
                              events=events)
    context = Context(
        vms=vm_table, templates=Templates(db), hypervisors=hypervisors,
        # Domain states from memory, kept by libvirt's events, for the VM
        # lifecycle (reads and its own actions); everything else, the
        # repairs included, reads the hosts live.
        libvirt=CachedStates(hypervisors),
        hosts=hosts, tasks=tasks, clock=clock, storage=storage, disks=storage.disks,
        vnis=config.network.vnis(), private_mtu=config.network.mtu, networks=networks,
        intents=intents, locks=locks, events=events,
    )
    vms = VMModel(context, config.compute.cluster_concurrency, compute=config.compute)

    async def vm_states(record):
        return await vms.states(record.name)

    async def delete_vms(record):
        await vms.delete_cluster_vms(record.name)

    clusters = ClusterModel(Clusters(db), clock, vm_states=vm_states,
                            all_vm_states=vms.states_by_cluster, on_delete=delete_vms,
                            events=events)
    vm_snapshots = VMSnapshotModel(
        storage.records, storage.server_set, storage.pool_set, storage.exporter,
        storage.branches, intents, clock, vms, storage.snapshots, events=events)
    vm_storages = VMStorageModel(
        storage.records, storage.pool_set, storage.volume_set, storage.exporter,
        storage.branches, storage.owners, hypervisors, intents, tasks, clock, vms,
        storage.local_copies)
    leftovers = Leftovers(context, storage, config.storage.iqn_domain)
    reconciler = Reconciler(context, IntentTable(db), Tasks(db), storage, clock,
                            leftovers=leftovers)
    serverwatch = ServerWatch(runners, clock, leftovers.restore_exports, events=events)
    models = Models(
        clusters=clusters,
        tasks=tasks,
        hosts=hosts,
        templates=templates,
        vms=vms,
        storage=storage,
        vm_storages=vm_storages,
        vm_snapshots=vm_snapshots,
        console=ConsoleModel(vms, hypervisors, config.hosts, clock,
                             max_session=config.console.max_session,
                             max_message=config.console.max_message),
        intents=intents,
        reconciler=reconciler,
        serverwatch=serverwatch,
        locks=locks,
        users=Users(db, clock=clock),
        context=context,
        health=Health(locks, reconciler, hypervisors, serverwatch, clock),
        metrics=metrics,
        events=events,
        vm_state_events=VMStateEvents(events, hypervisors, vm_table.by_uuid,
                                      settled=context.libvirt.settled),
        evacuations=HostEvacuations(vms, context),
        networks=networks,
        vm_nics=VMNicModel(context, vms),
    )
    metrics.watch(models, clock)
    return models
