"""
Following a task to its outcome, with a progress bar.

How the client learns of a task's changes is one small interface,
L{TaskSource}: L{Streaming} follows the task's events on C{GET /events};
when the daemon has no stream (an older daemon) or it cannot be opened, it
falls back to L{Polling}, which asks C{GET /tasks/:id} every L{POLL}
seconds.  A stream that breaks half way is also continued by polling.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol

from rich.console import Console
from rich.table import Column
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from comet_client.api import OPENED, ApiError, Client, Unreachable

#: Seconds between two looks at a running task.
POLL = 0.5

RUNNING = "running"


class TaskSource(Protocol):
    def updates(self, task: dict) -> Iterator[dict]:
        """Each new representation of C{task}, the last one no longer running."""


class Polling:
    """Task changes by asking for the task again and again."""

    def __init__(self, client: Client, interval: float = POLL):
        self.client = client
        self.interval = interval

    def updates(self, task: dict) -> Iterator[dict]:
        while task.get("status") == RUNNING:
            time.sleep(self.interval)
            task = self.client.get(task["href"])
            yield task


class Streaming:
    """
    Task changes from the event stream: the task's own events
    (C{?type=task&resource=<its href>}).  The task is read again once the
    stream is open, so a change made before it opened is not missed.
    """

    def __init__(self, client: Client, fallback: TaskSource | None = None):
        self.client = client
        self.fallback = fallback if fallback is not None else Polling(client)

    def updates(self, task: dict) -> Iterator[dict]:
        if task.get("status") != RUNNING:
            return
        try:
            for event in self.client.events(types=["task"], resources=[task["href"]],
                                            announce=True):
                if event is OPENED:
                    task = self.client.get(task["href"])
                else:
                    task = {**task, **{k: event[k] for k in ("status", "progress", "message")
                                       if k in event}}
                if task.get("status") != RUNNING:
                    # The end: as the API represents it (C{--json} prints it).
                    yield self.client.get(task["href"])
                    return
                yield task
        except (ApiError, Unreachable):
            pass
        # No stream (or it broke): ask again and again.
        if task.get("status") == RUNNING:
            yield from self.fallback.updates(task)


def source_for(client: Client) -> TaskSource:
    return Streaming(client)


def wait(source: TaskSource, task: dict, console: Console) -> dict:
    """
    Show C{task}'s progress (C{progress} 0-100, or an indeterminate bar when
    C{null}) and message until it ends; return its last representation.
    A C{KeyboardInterrupt} stops the waiting only (the caller says how to follow again).
    """
    # A message longer than the line is cut (ellipsis), not the bar: only the
    # message's column gives way (without this, rich shrank every column and
    # a long message left "t…" and no bar at all).
    columns = (TextColumn("task {task.fields[id]}", table_column=Column(no_wrap=True)), BarColumn(),
               TaskProgressColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}",
                          table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)))
    with Progress(*columns, console=console, transient=False, expand=True) as progress:
        bar = progress.add_task(task.get("message") or "", total=100, id=task["id"])
        _show(progress, bar, task)
        for task in source.updates(task):
            _show(progress, bar, task)
    return task


def _show(progress: Progress, bar, task: dict):
    value = task.get("progress")
    if task.get("status") == "finished":
        value = 100
    progress.update(bar, description=task.get("message") or "",
                    total=None if value is None else 100, completed=value or 0)
