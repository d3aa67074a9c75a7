"""The compute hosts: C{/hosts}, C{/hosts/:name} (read only, from the configuration)."""

from __future__ import annotations

from comet.model.hosts import Host
from comet.web._table import ROUTES

ROUTES.path("hosts", "/hosts")
ROUTES.path("host", "/hosts/<name>")


def representation(h: Host) -> dict:
    body = {
        "name": h.name,
        "uri": h.uri,
        "state": h.state,
        "cpus": h.cpus,
        "memory": h.memory,
        "memory_free": h.memory_free,
        "vms": h.vms,
        "href": ROUTES.href("host", name=h.name),
    }
    if h.reason:
        body["reason"] = h.reason
    return body


@ROUTES.route("GET", "hosts")
async def list_hosts(models, request, body):
    """List the compute hosts with their live state."""
    return [representation(h) for h in await models.hosts.list()]


@ROUTES.route("GET", "host")
async def get_host(models, request, body, name):
    """Describe one compute host: CPUs, memory and free memory (MB), domains."""
    return representation(await models.hosts.get(name))
