"""The cluster collection and resource: C{/cluster}, C{/cluster/:name}."""

from __future__ import annotations

from comet.model.clusters import CLUSTER_ACTIONS, STATES, Cluster
from comet.web._schemas import (BOOL, COUNT, NAME, STRING, TIME, URI, actions, enum, listing,
                                obj, resource)
from comet.web._table import ROUTES, Response

ROUTES.path("clusters", "/cluster")
ROUTES.path("cluster", "/cluster/<name>")

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
        "href": ROUTES.href("cluster", name=cluster.name),
    }


def representation(cluster: Cluster) -> dict:
    return {
        "name": cluster.name,
        "description": cluster.description,
        "state": cluster.state,
        "vms": cluster.vms,
        "vms_href": ROUTES.href("vms", cluster=cluster.name),
        "created": cluster.created,
        "href": ROUTES.href("cluster", name=cluster.name),
        "actions": ROUTES.actions("cluster", cluster.actions, name=cluster.name),
    }


@ROUTES.route("GET", "clusters", answers={200: listing(SUMMARY)})
async def list_clusters(models, request, body):
    """List the clusters."""
    return [summary(c) for c in await models.clusters.list()]


@ROUTES.route(
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
        representation(cluster), 201, {"Location": ROUTES.href("cluster", name=cluster.name)}
    )


@ROUTES.route("GET", "cluster", answers={200: CLUSTER})
async def get_cluster(models, request, body, name):
    """Describe one cluster."""
    return representation(await models.clusters.get(name))


@ROUTES.route(
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
        headers["Location"] = ROUTES.href("cluster", name=cluster.name)
    return Response(representation(cluster), 200, headers)


@ROUTES.route("DELETE", "cluster", obj(force=BOOL), answers={204: None},
              errors=(409, 502, 503))
async def delete_cluster(models, request, body, name):
    """Delete a cluster (with its VMs only when forced)."""
    await models.clusters.delete(name, force=body.get("force", False))
    return Response(code=204)
