"""
A VM's NICs: C{/cluster/:cluster/vms/:name/nics} and
C{/cluster/:cluster/vms/:name/nics/:mac}, a sub-collection as the VM's
volumes are (C{…/storages}): each NIC shown as in the VM's representation.
POST adds one (hot-plugged if the VM is on a host; 201), DELETE takes one
off (a task: the guest must let it go).  Who may call them is as for the
VM's volumes: anyone reads, admins change.
"""

from __future__ import annotations

from comet.model.nics import nic_views
from comet.web._schemas import NAME, listing, obj
from comet.web._table import Response, Routes
from comet.web.paths import PATHS
from comet.web.tasks import TASK, task_response
from comet.web.vms import MAC, NIC

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()

#: What a NIC request answers besides its own 409s: a host that does not
#: answer (503) or fails a command (502), an unknown VM or network (404).
_ERRORS = (400, 404, 409, 502, 503)


def _views(vm) -> list[dict]:
    return nic_views(vm.record, dict(vm.host_bridges))


@routes.route("GET", "vm.nics", answers={200: listing(NIC)}, errors=(404,))
async def list_vm_nics(models, request, body, cluster, name):
    """List the VM's NICs, in the order its guest numbers them."""
    return _views(await models.vm_nics.list(cluster, name))


@routes.route("POST", "vm.nics", obj(("network",), network=NAME, mac=MAC),
              answers={201: NIC}, errors=_ERRORS)
async def add_vm_nic(models, request, body, cluster, name):
    """
    Add a NIC on a network (C{private}: the cluster's own), last in the
    VM's order; hot-plugged if the VM is on a host (its network made there
    first), else the VM gets it at its next start.
    """
    vm, nic = await models.vm_nics.add(cluster, name, body["network"], body.get("mac"))
    href = PATHS.href("vm.nic", cluster=cluster, name=vm.name, mac=nic.mac)
    return Response(_views(vm)[nic.index], 201, {"Location": href})


@routes.route("GET", "vm.nic", answers={200: NIC}, errors=(404,))
async def get_vm_nic(models, request, body, cluster, name, mac):
    """Describe one of the VM's NICs, by its MAC."""
    vm, nic = await models.vm_nics.get(cluster, name, mac)
    return _views(vm)[nic.index]


@routes.route("DELETE", "vm.nic", obj(), answers={202: TASK}, errors=(404, 409, 503))
async def remove_vm_nic(models, request, body, cluster, name, mac):
    """
    Take the NIC off the VM (a task): unplugged once the guest lets it go,
    if the VM is on a host; the NICs after it move up one.
    """
    return task_response(await models.vm_nics.remove(cluster, name, mac))
