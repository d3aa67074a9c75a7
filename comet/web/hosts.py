"""
The compute hosts: C{/hosts}, C{/hosts/:name} (read only, from the configuration).

A host's libvirt C{uri} names a login and the paths of its key and known hosts
file (C{qemu+ssh://root@host/system?keyfile=...}): only admins see it.
"""

from __future__ import annotations

from comet.model.hosts import Host
from comet.web._schemas import COUNT, STRING, URI, enum, listing, nullable, resource
from comet.web._table import ADMIN, Routes, allows
from comet.web.paths import PATHS
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
