"""
The API's route table, made anew for each app.

The resource modules declare their endpoints (each its own
L{comet.web._table.Routes}); L{api_routes} puts them on the paths of
L{comet.web.paths} in one table, in the order listed here, with the OpenAPI
document of that very table.  Each L{comet.web.CometAPI} gets its own, as
Klein binds an app to each instance of its class: two apps in one process
share no table, and no table depends on which module was imported first.
"""

from __future__ import annotations

from comet.web import (audit, clusters, console, events, health, hosts, login, storage, tasks,
                       templates, vm_nics, vms)
from comet.web._table import RouteTable
from comet.web.openapi import DOCUMENT, serve_document
from comet.web.paths import PATHS

#: The resource modules' declarations, in the order the API lists them
#: (the OpenAPI document's order).
RESOURCES = (
    clusters.routes,
    hosts.routes,
    health.routes,
    audit.routes,
    tasks.routes,
    events.routes,
    login.routes,
    storage.routes,
    templates.routes,
    vms.routes,
    vm_nics.routes,
    console.routes,
)


def api_routes() -> RouteTable:
    """A new route table of the whole API."""
    table = RouteTable(PATHS)
    for routes in RESOURCES:
        table.add(routes)
    table.route("GET", "openapi", answers={200: DOCUMENT})(serve_document(table))
    return table
