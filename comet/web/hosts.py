"""
The compute hosts: C{/hosts}, C{/hosts/:name} (from the configuration), and
their admin actions C{maintenance} and C{evacuate}
(L{comet.model.evacuation}).

A host's libvirt C{uri} names a login and the paths of its key and known hosts
file (C{qemu+ssh://root@host/system?keyfile=...}): only admins see it.
"""

from __future__ import annotations

from comet.model.hosts import HOST_ACTIONS, Host
from comet.web._schemas import (BOOL, COUNT, STRING, URI, actions, enum, listing, nullable, obj,
                                resource)
from comet.web._table import ADMIN, Routes, allows
from comet.web.paths import PATHS
from comet.web.tasks import TASK, task_response
from comet.virt import CONNECTED, UNREACHABLE

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()


#: A host: its live figures are C{null} while it does not answer, and
#: C{reason} says why (only then); C{uri} is shown to admins only.
HOST = resource(
    "Host",
    optional=("reason", "uri"),
    name=STRING,
    uri=STRING,
    state=enum(CONNECTED, UNREACHABLE),
    cpus=nullable(COUNT),
    memory=nullable(COUNT),
    memory_free=nullable(COUNT),
    vms=nullable(COUNT),
    href=URI,
    reason=STRING,
    maintenance=BOOL,
    actions=actions(*HOST_ACTIONS),
)


def _admin(request) -> bool:
    identity = getattr(request, "comet_identity", None)
    return identity is not None and allows(identity.role, ADMIN)


def representation(h: Host, show_uri: bool) -> dict:
    body = {
        "name": h.name,
        "uri": h.uri,
        "state": h.state,
        "cpus": h.cpus,
        "memory": h.memory,
        "memory_free": h.memory_free,
        "vms": h.vms,
        "href": PATHS.href("host", name=h.name),
        "maintenance": h.maintenance,
        "actions": PATHS.actions("host", h.actions, name=h.name),
    }
    if h.reason:
        body["reason"] = h.reason
    if not show_uri:
        del body["uri"]
    return body


@routes.route("GET", "hosts", answers={200: listing(HOST)})
async def list_hosts(models, request, body):
    """List the compute hosts with their live state (C{uri}: admins only)."""
    return [representation(h, _admin(request)) for h in await models.hosts.list()]


@routes.route("GET", "host", answers={200: HOST})
async def get_host(models, request, body, name):
    """Describe one compute host: CPUs, memory and free memory (MB), domains."""
    return representation(await models.hosts.get(name), _admin(request))


#: The body of C{maintenance}: on or off.
MAINTENANCE = obj(("enabled",), enabled=BOOL)


@routes.route("POST", "host.maintenance", MAINTENANCE, role=ADMIN, answers={200: HOST},
              errors=(404,))
async def maintenance(models, request, body, name):
    """
    Put the host in maintenance (placement, migrations included, skips it
    from now on; its VMs stay until it is evacuated) or take it out.
    """
    host = await models.hosts.set_maintenance(name, body["enabled"])
    return representation(host, _admin(request))


#: The body of C{evacuate}: C{fenced}, the admin's word that the host is off for good.
EVACUATE = obj(fenced=BOOL)


@routes.route("POST", "host.evacuate", EVACUATE, role=ADMIN, answers={202: TASK},
              errors=(404, 409, 503))
async def evacuate(models, request, body, name):
    """
    Move every VM off the host, which must be in maintenance (a task with
    each VM's outcome): running and paused VMs migrate live, shut-off ones
    have their placement released.  With C{fenced} (only while the host
    does not answer): its exports are withdrawn and its VMs started on
    other hosts from their shared disks.
    """
    task = await models.evacuations.evacuate(name, fenced=body.get("fenced", False))
    return task_response(task)
