"""
The audit log (C{GET /auditlog}, admins only).  The health check is
L{comet.web.health}.
"""

from __future__ import annotations

from comet.web._errors import HTTPError
from comet.web._schemas import STRING, TIME, listing, nullable, resource
from comet.web._table import ADMIN, Routes
from comet.web.paths import PATHS

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()


#: Entries per page of the audit log, by default and at most.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

ENTRY = resource(
    "AuditEntry",
    id={"type": "integer", "minimum": 1},
    time=TIME,
    user=STRING,
    # A change's method; a failed login's or a console ticket's, GET too.
    method=STRING,
    uri=STRING,
    status={"type": "integer", "minimum": 100, "maximum": 599},
    task_id=nullable({"type": "integer", "minimum": 1}),
    task=nullable({"type": "string", "pattern": "^/tasks/[0-9]+$"}),
)

#: The largest integer SQLite stores: a larger C{since} or C{offset} is a 400,
#: not an C{OverflowError} (a 500) in the database thread.
SQLITE_MAX = 2**63 - 1

#: The query parameters of C{GET /auditlog} (what L{auditlog} reads).
QUERY = {
    "user": {"type": "string"},
    "since": {"type": "integer", "minimum": 0, "maximum": SQLITE_MAX},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    "offset": {"type": "integer", "minimum": 0, "maximum": SQLITE_MAX, "default": 0},
}


def int_arg(request, name: str, default, low: int, high: int | None = None):
    """The integer query parameter C{name} (C{default} when absent), or a 400 outside C{[low, high]}."""
    raw = request.args.get(name.encode("ascii"), [None])[0]
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"query parameter {name!r} must be an integer") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise HTTPError(400, f"query parameter {name!r} must be {bounds}")
    return value


def representation(entry) -> dict:
    return {
        "id": entry.id,
        "time": entry.time,
        "user": entry.user,
        "method": entry.method,
        "uri": entry.uri,
        "status": entry.status,
        "task_id": entry.task_id,
        "task": PATHS.href("task", id=entry.task_id) if entry.task_id is not None else None,
    }


@routes.route("GET", "auditlog", role=ADMIN, answers={200: listing(ENTRY)})
async def auditlog(models, request, body):
    """
    The audit log, oldest first: every POST, PUT and DELETE (time, user,
    method, URI, status, task id).  C{?user=}, C{?since=} (seconds since the
    epoch), C{?limit=} (default 100, at most 1000) and C{?offset=}.
    """
    user = request.args.get(b"user", [None])[0]
    entries = await models.users.audit_log(
        user=user.decode("utf-8", "replace") if user is not None else None,
        since=int_arg(request, "since", None, 0, SQLITE_MAX),
        limit=int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=int_arg(request, "offset", 0, 0, SQLITE_MAX),
    )
    return [representation(e) for e in entries]
