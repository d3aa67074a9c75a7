"""The cluster collection and resource: C{/cluster}, C{/cluster/:name}."""

from __future__ import annotations

from comet.model.clusters import CLUSTER_ACTIONS, STATES, Cluster
from comet.web._schemas import (BOOL, COUNT, NAME, STRING, TIME, URI, actions, enum, listing,
                                obj, resource)
from comet.web._table import Response, Routes
from comet.web.paths import PATHS

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()


SUMMARY = resource("ClusterSummary", name=NAME, state=enum(*STATES), vms=COUNT, href=URI)
CLUSTER = resource(
    "Cluster",
    name=NAME,
    description=STRING,
    state=enum(*STATES),
    vms=COUNT,
    vms_href=URI,
    created=TIME,
    href=URI,
    actions=actions(*CLUSTER_ACTIONS),
)


def summary(cluster: Cluster) -> dict:
    return {
        "name": cluster.name,
        "state": cluster.state,
        "vms": cluster.vms,
        "href": PATHS.href("cluster", name=cluster.name),
    }


def representation(cluster: Cluster) -> dict:
    return {
        "name": cluster.name,
        "description": cluster.description,
        "state": cluster.state,
        "vms": cluster.vms,
        "vms_href": PATHS.href("vms", cluster=cluster.name),
        "created": cluster.created,
        "href": PATHS.href("cluster", name=cluster.name),
        "actions": PATHS.actions("cluster", cluster.actions, name=cluster.name),
    }


@routes.route("GET", "clusters", answers={200: listing(SUMMARY)})
async def list_clusters(models, request, body):
    """List the clusters."""
    return [summary(c) for c in await models.clusters.list()]


@routes.route(
    "POST",
    "clusters",
    obj(("name",), name=NAME, description={"type": "string", "maxLength": 1024}),
    answers={201: CLUSTER},
    errors=(409,),
)
async def create_cluster(models, request, body):
    """Create a cluster."""
    cluster = await models.clusters.create(body["name"], body.get("description", ""))
    return Response(
        representation(cluster), 201, {"Location": PATHS.href("cluster", name=cluster.name)}
    )


@routes.route("GET", "cluster", answers={200: CLUSTER})
async def get_cluster(models, request, body, name):
    """Describe one cluster."""
    return representation(await models.clusters.get(name))


@routes.route(
    "PUT",
    "cluster",
    obj(name=NAME, description={"type": "string", "maxLength": 1024}),
    answers={200: CLUSTER},
    errors=(409,),
)
async def update_cluster(models, request, body, name):
    """Rename a cluster or change its description."""
    cluster = await models.clusters.update(name, body.get("name"), body.get("description"))
    headers = {}
    if cluster.name != name:
        headers["Location"] = PATHS.href("cluster", name=cluster.name)
    return Response(representation(cluster), 200, headers)


@routes.route("DELETE", "cluster", obj(force=BOOL), answers={204: None},
              errors=(409, 502, 503))
async def delete_cluster(models, request, body, name):
    """Delete a cluster (with its VMs only when forced)."""
    await models.clusters.delete(name, force=body.get("force", False))
    return Response(code=204)
