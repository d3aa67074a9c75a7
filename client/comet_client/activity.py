"""C{comet task}, C{comet audit} and C{comet events}: what the daemon did and is doing."""

from __future__ import annotations

import json
import sys

import click

from comet_client import names
from comet_client.api import Unreachable, path
from comet_client.cli import EXIT_INTERRUPTED, App, cli, command_group, json_option, pass_app
from comet_client.output import cell

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


@cli.command()
@click.option("--type", "types", multiple=True, metavar="TYPE",
              help="Only events of this type (vm.state, task.progress, ...) or kind (vm, task,"
                   " cluster, volume, snapshot, template, host, storageserver); repeatable.")
@click.option("--resource", "resources", multiple=True, metavar="HREF",
              help="Only events of this resource and those under it (/cluster/lab); repeatable.")
@click.option("--count", type=click.IntRange(1), help="Exit after this many events.")
@click.option("--last-event-id", help="Resume after this event id (its 'id').")
@json_option
@pass_app
def events(app: App, types, resources, count, last_event_id, as_json):
    """Print changes as they happen (the daemon's GET /events), until Ctrl-C.

    With --json, one JSON object per line, as the API sends it.
    """
    seen = 0
    try:
        for event in app.client.events(types, resources, last_id=last_event_id):
            if as_json:
                click.echo(json.dumps(event, ensure_ascii=False))
            else:
                app.out.print(event_line(event), highlight=False)
            seen += 1
            if count is not None and seen >= count:
                return
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    raise Unreachable("the daemon ended the event stream")


def event_line(event: dict) -> str:
    """One line for a person: time, type, href and what the event says."""
    said = " ".join(f"{k}={cell(k, v)}" for k, v in event.items()
                    if k not in ("id", "type", "href", "time"))
    when = cell("time", event.get("time"))
    return f"{when}  {event.get('type', ''):<20} {event.get('href', '')}  {said}".rstrip()
