"""
Following a task to its outcome, with a progress bar.

How the client learns of a task's changes is one small interface,
L{TaskSource}: L{Polling} asks C{GET /tasks/:id} every L{POLL} seconds.  When
the daemon has an event stream (C{GET /events}), a source that reads it
replaces L{Polling} in L{source_for}, and the progress display and
C{comet task wait} stay as they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from comet_client.api import Client

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


def source_for(client: Client) -> TaskSource:
    return Polling(client)


def wait(source: TaskSource, task: dict, console: Console) -> dict:
    """
    Show C{task}'s progress (C{progress} 0-100, or an indeterminate bar when
    C{null}) and message until it ends; return its last representation.
    A C{KeyboardInterrupt} stops the waiting only (the caller says how to follow again).
    """
    columns = (TextColumn("task {task.fields[id]}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=console, transient=False) as progress:
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
