"""
What Comet means: clusters, VMs, templates, hosts, storage and tasks.

The model is async functions over the store and the adapters; it raises the
domain errors of L{comet.errors} and knows nothing of HTTP.  L{Models} is the
bag of model objects the web layer is handed.
"""

from __future__ import annotations

import attrs

from comet.model.clusters import ClusterModel
from comet.model.hosts import HostModel
from comet.model.tasks import TaskRunner
from comet.model.templates import TemplateModel
from comet.model.vms import VMModel


@attrs.define
class Models:
    clusters: ClusterModel
    tasks: TaskRunner
    hosts: HostModel
    templates: TemplateModel
    vms: VMModel


def make_models(db, hypervisors, config, clock) -> Models:
    """The models of a daemon over C{db} and the libvirt adapter, wired together."""
    from comet.store import Clusters, Tasks, Templates, VMs

    tasks = TaskRunner(Tasks(db), clock)
    clusters = ClusterModel(Clusters(db), clock)
    hosts = HostModel(hypervisors, config.hosts)
    templates = TemplateModel(Templates(db), hosts, clock)
    vms = VMModel(
        VMs(db), Templates(db), hypervisors, hosts, tasks, clock, config.compute.cluster_concurrency
    )

    async def vm_states(record):
        return await vms.states(record.name)

    async def delete_vms(record):
        await vms.delete_cluster_vms(record.name)

    clusters.vm_states = vm_states
    clusters.on_delete = delete_vms
    return Models(clusters=clusters, tasks=tasks, hosts=hosts, templates=templates, vms=vms)
