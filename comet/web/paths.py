"""
Every URI Comet serves, by name: the one place a path is written.

Representations make their C{href} and C{actions} fields from L{PATHS}; each
app's route table (L{comet.web.routes.api_routes}) serves endpoints on these
names.  The actions of a VM and of a cluster get one path each, from the
model's state machines, so that an action the model knows has its URI.
"""

from __future__ import annotations

from comet.model.clusters import CLUSTER_ACTIONS
from comet.model.hosts import HOST_ACTIONS
from comet.model.vms import VM_ACTIONS
from comet.web._table import Paths

_VM = "/cluster/<cluster>/vms/<name>"

PATHS = Paths({
    "clusters": "/cluster",
    "cluster": "/cluster/<name>",
    **{f"cluster.{action}": f"/cluster/<name>/{action}" for action in CLUSTER_ACTIONS},
    "vms": "/cluster/<cluster>/vms",
    "vm": _VM,
    **{f"vm.{action}": f"{_VM}/{action}" for action in VM_ACTIONS},
    "vm.screenshot": f"{_VM}/screenshot",
    "vm.console": f"{_VM}/console",
    "vm.storages": f"{_VM}/storages",
    "vm.storage": f"{_VM}/storages/<zvol>",
    "vm.storage.unmap": f"{_VM}/storages/<zvol>/unmap",
    "vm.nics": f"{_VM}/nics",
    "vm.nic": f"{_VM}/nics/<mac>",
    "vm.snapshots": f"{_VM}/snapshots",
    "vm.snapshot": f"{_VM}/snapshots/<snapshot>",
    "vm.snapshot.revert": f"{_VM}/snapshots/<snapshot>/revert",
    "console.page": "/console/vnc",
    "console.serial": "/console/serial",
    "console.novnc": "/console/novnc/<path:file>",
    "console.ws": "/console/ws/<cluster>/<name>/<token>",
    "templates": "/templates",
    "template": "/templates/<name>",
    "hosts": "/hosts",
    "host": "/hosts/<name>",
    **{f"host.{action}": f"/hosts/<name>/{action}" for action in HOST_ACTIONS},
    "storageservers": "/storageservers",
    "storageserver": "/storageservers/<host>",
    "storageserver.zpools": "/storageservers/<host>/storagezpools",
    "storagepools": "/storagepools",
    "storagepool": "/storagepools/<name>",
    "storagepool.activate": "/storagepools/<name>/activate",
    "storagepool.deactivate": "/storagepools/<name>/deactivate",
    "storagevolumes": "/storagepools/<pool>/storagevolumes",
    "storagevolume": "/storagepools/<pool>/storagevolumes/<volume>",
    "tasks": "/tasks",
    "task": "/tasks/<int:id>",
    "health": "/health",
    "metrics": "/metrics",
    "auditlog": "/auditlog",
    "events": "/events",
    "login": "/login",
    "openapi": "/openapi.json",
})
