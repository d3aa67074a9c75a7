"""The task collection and resource: C{/tasks}, C{/tasks/:id}."""

from __future__ import annotations

from comet.errors import InvalidInput
from comet.model.tasks import Target
from comet.store import TaskRecord
from comet.web._schemas import STRING, TIME, enum, listing, resource
from comet.web._table import Response, Routes
from comet.web.audit import int_arg
from comet.web.paths import PATHS

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()


#: What a task's C{status} can be (the CHECK of its column).
STATUSES = ("running", "finished", "failed")

#: A task: the body of every 202 (with a C{Location} of the task).
TASK = resource(
    "Task",
    id={"type": "integer", "minimum": 1},
    status=enum(*STATUSES),
    message=STRING,
    target_uri=STRING,
    progress={"type": ["integer", "null"], "minimum": 0, "maximum": 100},
    created=TIME,
    updated=TIME,
    href={"type": "string", "pattern": "^/tasks/[0-9]+$"},
)


#: The path (L{comet.web.paths}) of each kind of L{Target} a task is about.
TARGET_PATHS = {
    "cluster": "cluster",
    "vm": "vm",
    "volume": "storagevolume",
    "vm storage": "vm.storage",
    "host": "host",
}


def target_uri(target: Target) -> str:
    """
    The URI of the resource a task is about: what its record keeps as
    C{target_uri} (the model names the resource, L{comet.model.tasks.Target}).
    """
    return PATHS.href(TARGET_PATHS[target.kind], **target.ids)


def representation(task: TaskRecord) -> dict:
    return {
        "id": task.id,
        "status": task.status,
        "message": task.message,
        "target_uri": task.target_uri,
        "progress": task.progress,
        "created": task.created,
        "updated": task.updated,
        "href": PATHS.href("task", id=task.id),
    }


def task_response(task: TaskRecord) -> Response:
    """The 202 of a request that started C{task}: the task, and its URI as C{Location}."""
    return Response(representation(task), 202, {"Location": PATHS.href("task", id=task.id)})


#: Tasks per page of C{/tasks}, by default and at most.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@routes.route("GET", "tasks", answers={200: listing(TASK)}, errors=(400,))
async def list_tasks(models, request, body):
    """
    List the tasks, newest first: C{?status=running} filters by status,
    C{?limit=} (default 100, at most 1000) and C{?offset=} page them.
    """
    status = request.args.get(b"status", [None])[0]
    if status is not None:
        status = status.decode("utf-8", "replace")
        if status not in STATUSES:
            raise InvalidInput(f"status is one of {', '.join(STATUSES)}, not {status!r}")
    tasks = await models.tasks.list(
        status,
        limit=int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=int_arg(request, "offset", 0, 0, 2**62),
        newest_first=True,
    )
    return [representation(t) for t in tasks]


@routes.route("GET", "task", answers={200: TASK})
async def get_task(models, request, body, id):
    """Describe one task."""
    return representation(await models.tasks.get(id))
