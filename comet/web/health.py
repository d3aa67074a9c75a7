"""
The health check (C{GET /health}) and the Prometheus metrics (C{GET /metrics}).

C{/health} needs no credentials, so that a load balancer can ask it: its
status code is what such a checker reads (200: send traffic here, the API
serves, fully or C{degraded}; 503: do not).  A caller without credentials
is told the status and, when it is not C{ok}, which checks are not, by
their names only (C{database}, C{lease}, C{reconcile}, C{hosts},
C{storage}): nothing that names a host, a server or an address, which a
stranger could use to map the network behind the daemon.  A caller who
sends a valid token or password (any role) gets each check with its
reason and what it saw: host and server names (what C{GET /hosts} and
C{GET /storageservers} show that caller anyway).  See
L{comet.model.health} for what is checked.

C{/metrics} is the text format of the daemon's own registry
(L{comet.metrics}), for a viewer's token or the scrape token of
C{[metrics] token_file}; never without credentials (it names hosts,
servers and pools).
"""

from __future__ import annotations

from comet.metrics import CONTENT_TYPE
from comet.model.health import DEGRADED, FAILING, OK
from comet.web._schemas import STRING, enum, listing, resource
from comet.web._table import PUBLIC, VIEWER, Response, Routes

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()

CHECK_NAMES = ("database", "lease", "reconcile", "hosts", "storage")

CHECK = resource(
    "HealthCheck",
    name=enum(*CHECK_NAMES),
    state=enum(OK, DEGRADED, FAILING),
    # One sentence ("" when all is well).
    reason=STRING,
    # What the check saw (its fields vary by check): only for a caller with credentials.
    detail={"description": "what the check saw; its fields vary by check"},
)
HEALTH = resource(
    "Health",
    optional=("message", "checks"),
    # ok and degraded answer 200, failing 503.
    status=enum(OK, DEGRADED, FAILING),
    message=STRING,
    checks=listing(CHECK),
)

MESSAGES = {
    DEGRADED: "the API serves, but some of what it acts on does not answer: {names}",
    FAILING: "the API cannot serve: {names}",
}


@routes.route("GET", "health", role=PUBLIC, answers={200: HEALTH, 503: HEALTH})
async def health(models, request, body):
    """Whether the daemon can serve (200) or not (503), and what is wrong."""
    report = await models.health.check()
    answer: dict = {"status": report.status}
    if report.status != OK:
        names = ", ".join(c.name for c in report.checks if c.state != OK)
        answer["message"] = MESSAGES[report.status].format(names=names)
    if getattr(request, "comet_identity", None) is not None:
        answer["checks"] = [
            {"name": c.name, "state": c.state, "reason": c.reason, "detail": c.detail}
            for c in report.checks
        ]
    return Response(answer, report.code, {"Cache-Control": "no-store"})


@routes.route("GET", "metrics", produces="text/plain", role=VIEWER, answers={200: None})
async def metrics(models, request, body):
    """The daemon's metrics, in Prometheus' text format (a viewer, or the scrape token)."""
    text = await models.metrics.scrape()
    return Response(raw=text, content_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
