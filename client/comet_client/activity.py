"""C{comet task} and C{comet audit}: what the daemon did and is doing."""

from __future__ import annotations

import click

from comet_client import names
from comet_client.api import path
from comet_client.cli import App, cli, command_group, json_option, pass_app

task = command_group("task", "Long operations (a 202's task): follow them.")

_TASK_COLUMNS = ("id", "status", "progress", "message", "target_uri", "updated")


@task.command("list")
@click.option("--status", type=click.Choice(["running", "finished", "failed"]), help="Only tasks in this status.")
@click.option("--limit", type=click.IntRange(1, 1000), help="At most this many (the API's default: 100).")
@click.option("--offset", type=click.IntRange(0), help="Skip this many.")
@json_option
@pass_app
def task_list(app: App, status, limit, offset, as_json):
    """List tasks, newest first."""
    app.show(app.client.get("/tasks", status=status, limit=limit, offset=offset), as_json, _TASK_COLUMNS)


@task.command("show")
@click.argument("task_id", metavar="TASK", type=names.TASK)
@json_option
@pass_app
def task_show(app: App, task_id, as_json):
    """Describe a task."""
    app.show(app.client.get(path("tasks", str(task_id))), as_json)


@task.command("wait")
@click.argument("task_id", metavar="TASK", type=names.TASK)
@json_option
@pass_app
def task_wait(app: App, task_id, as_json):
    """Follow a task to its outcome with a progress bar (exit 1 if it failed)."""
    app.task(app.client.get(path("tasks", str(task_id))), as_json, no_wait=False)


@cli.command()
@click.option("--user", help="Only this user's requests.")
@click.option("--since", type=click.IntRange(0), help="Only requests since this time (seconds since the epoch).")
@click.option("--limit", type=click.IntRange(1), help="At most this many entries.")
@click.option("--offset", type=click.IntRange(0), help="Skip this many.")
@json_option
@pass_app
def audit(app: App, user, since, limit, offset, as_json):
    """The audit log: who changed what, and when (admins only)."""
    app.show(app.client.get("/auditlog", user=user, since=since, limit=limit, offset=offset), as_json,
             ("id", "time", "user", "method", "uri", "status", "task_id"))
