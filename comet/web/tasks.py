"""The task collection and resource: C{/tasks}, C{/tasks/:id}."""

from __future__ import annotations

from comet.errors import InvalidInput
from comet.store import TaskRecord
from comet.web._table import ROUTES

ROUTES.path("tasks", "/tasks")
ROUTES.path("task", "/tasks/<int:id>")

#: What a task's C{status} can be (the CHECK of its column).
STATUSES = ("running", "finished", "failed")


def representation(task: TaskRecord) -> dict:
    return {
        "id": task.id,
        "status": task.status,
        "message": task.message,
        "target_uri": task.target_uri,
        "progress": task.progress,
        "created": task.created,
        "updated": task.updated,
        "href": ROUTES.href("task", id=task.id),
    }


@ROUTES.route("GET", "tasks")
async def list_tasks(models, request, body):
    """List the tasks (C{?status=running} filters by status)."""
    status = request.args.get(b"status", [None])[0]
    if status is not None:
        status = status.decode("utf-8", "replace")
        if status not in STATUSES:
            raise InvalidInput(f"status is one of {', '.join(STATUSES)}, not {status!r}")
    return [representation(t) for t in await models.tasks.list(status)]


@ROUTES.route("GET", "task")
async def get_task(models, request, body, id):
    """Describe one task."""
    return representation(await models.tasks.get(id))
