"""
Running a long job as a Task.

A Task is the client's handle on work that outlives its request (a volume
download, a cluster start).  L{TaskRunner.start} records the task as
C{running} *before* the job begins, runs the job, and records how it ended;
the job reports progress through a L{TaskHandle}.  A task that was running when
the daemon died is marked C{failed} by L{TaskRunner.recover} at the next start.

A task is about a resource, which the model names by ids (a L{Target}); how
the task's record writes it (the API writes the resource's URI) is the
C{address} the runner is given, so that the model makes no URI.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Awaitable, Callable, Mapping

import attrs
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from comet.errors import CometError
from comet.model.events import or_silent
from comet.store import TaskRecord, Tasks

log = Logger()

RESTARTED = "failed: the Comet daemon stopped while this task was running"

#: The id of the task the running code belongs to (each job runs in its own
#: context), so that intent records can name it without threading it through.
CURRENT_TASK: ContextVar[int | None] = ContextVar("comet_current_task", default=None)


@attrs.frozen
class Target:
    """
    What a task is about, in the model's terms: a kind of resource and the ids
    that name one (C{Target("vm", {"cluster": "lab", "name": "web"})}).

    Kinds: C{cluster} (C{name}), C{vm} (C{cluster}, C{name}), C{volume}
    (C{pool}, C{volume}), C{vm storage} (C{cluster}, C{name}, C{zvol}), C{host}
    (C{name}).
    """

    kind: str
    ids: Mapping[str, str]


def describe_target(target: Target) -> str:
    """A target in words (C{vm lab/web}): what a task records when no address is given."""
    return f"{target.kind} {'/'.join(str(v) for v in target.ids.values())}"


class TaskHandle:
    """What a running job may do to its own task."""

    def __init__(self, runner: "TaskRunner", task_id: int):
        self._runner = runner
        self.id = task_id

    def progress(self, percent: int | None, message: str = "") -> Deferred:
        """Record how far the job is (0-100, or C{None}) and what it is doing."""
        if percent is not None:
            percent = max(0, min(100, int(percent)))
        return self._runner.progress(self.id, percent, message)


class TaskRunner:
    """
    Starts jobs as tasks and remembers the ones in flight, so that the daemon
    can wait for them (or say they were cut short) when it stops.
    """

    def __init__(self, tasks: Tasks, clock: IReactorTime,
                 address: Callable[[Target], str] = describe_target, events=None):
        """
        @param address: how a task's record writes its L{Target} (the web
            layer gives the resource's URI, L{comet.web.tasks.target_uri}).
        @param events: the L{comet.model.events.EventLog} told of each
            task's start, progress and end.
        """
        self._tasks = tasks
        self._events = or_silent(events)
        self._clock = clock
        self._address = address
        self._running: dict[int, Deferred] = {}
        #: Task id -> the kind of its target, while it runs.
        self._kinds: dict[int, str] = {}
        #: (kind, status) -> tasks of this process that ended so (the metrics).
        self._ended: dict[tuple[str, str], int] = {}

    def _now(self) -> int:
        return int(self._clock.seconds())

    def progress(self, task_id: int, percent: int | None, message: str = "") -> Deferred:
        """Record task C{task_id}'s progress now (what its L{TaskHandle} asks)."""
        d = self._tasks.progress(task_id, percent, message, self._now())
        d.addCallback(self._progressed, task_id, percent, message)
        return d

    def _progressed(self, result, task_id: int, percent: int | None, message: str):
        self._events.emit("task.progress", {"id": task_id}, status="running",
                          progress=percent, message=message)
        return result

    async def start(
        self,
        target: Target,
        job: Callable[[TaskHandle], Awaitable[str]],
        message: str = "",
    ) -> TaskRecord:
        """
        Record a new running task about C{target} and start C{job(handle)}.

        The job's return value (a sentence) becomes the task's final message
        with status C{finished}; a L{CometError} it raises becomes status
        C{failed} with the error's reason; any other exception is logged with
        its traceback and the task fails with a generic message.

        @return: the task as recorded when it started.
        """
        record = await self._tasks.create(self._address(target), message, self._now())
        self._events.emit("task.created", {"id": record.id}, status=record.status,
                          progress=record.progress, message=record.message,
                          target_uri=record.target_uri)
        handle = TaskHandle(self, record.id)
        self._kinds[record.id] = target.kind
        done = ensureDeferred(self._run(handle, job))
        self._running[record.id] = done
        done.addBoth(self._forget, record.id)
        return record

    async def _run(self, handle: TaskHandle, job) -> None:
        CURRENT_TASK.set(handle.id)
        try:
            message = await job(handle)
        except CometError as e:
            status, message = "failed", e.said()
        except Exception:
            log.failure("task {id} failed", id=handle.id)
            status, message = "failed", "internal error; see the daemon's log"
        else:
            status, message = "finished", message or "done"
        kind = self._kinds.get(handle.id, "")
        self._ended[kind, status] = self._ended.get((kind, status), 0) + 1
        record = await self._tasks.finish(handle.id, status, message, self._now())
        self._events.emit(f"task.{status}", {"id": handle.id}, status=status,
                          progress=getattr(record, "progress", None), message=message)

    def _forget(self, result, task_id: int):
        self._running.pop(task_id, None)
        self._kinds.pop(task_id, None)
        return None

    def wait(self, task_id: int) -> Deferred:
        """A Deferred that fires when task C{task_id} has ended (at once if it has)."""
        running = self._running.get(task_id)
        if running is None:
            return succeed(None)
        ended = Deferred()

        def fire(result):
            ended.callback(None)
            return result

        running.addBoth(fire)
        return ended

    def running(self) -> list[int]:
        """Ids of the tasks this process is running now."""
        return list(self._running)

    def running_counts(self) -> dict[str, int]:
        """Tasks this process is running now, by the kind of their target (the metrics)."""
        counts: dict[str, int] = {}
        for kind in self._kinds.values():
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def ended_counts(self) -> dict[tuple[str, str], int]:
        """Tasks this process ran that ended, by (kind of target, status): the metrics."""
        return dict(self._ended)

    def wait_all(self) -> Deferred:
        """A Deferred that fires when every task in flight has ended."""
        return DeferredList([self.wait(task_id) for task_id in self._running])

    async def recover(self) -> list[int]:
        """At start: fail every task a previous process left running."""
        ids = await self._tasks.fail_running(RESTARTED, self._now())
        if ids:
            log.warn("tasks {ids} were running when the daemon stopped; marked failed", ids=ids)
        return ids

    def get(self, task_id: int):
        return self._tasks.get(task_id)

    def list(self, status: str | None = None, limit: int | None = None, offset: int = 0,
             newest_first: bool = False):
        return self._tasks.list(status, limit, offset, newest_first)

    async def prune(self, keep_days: float) -> int:
        """Delete the tasks that ended more than C{keep_days} days ago; how many."""
        if keep_days <= 0:
            return 0
        count = await self._tasks.prune(self._now() - int(keep_days * 86400))
        if count:
            log.info("deleted {count} tasks that ended over {days} days ago",
                     count=count, days=keep_days)
        return count

    def start_pruning(self, keep_days: float, interval: float) -> None:
        """Prune (L{prune}) now and every C{interval} seconds, until L{stop_pruning}."""
        if keep_days <= 0:
            return

        async def prune():
            try:
                await self.prune(keep_days)
            except Exception:
                log.failure("pruning old tasks")

        self._pruning = LoopingCall(lambda: ensureDeferred(prune()))
        self._pruning.clock = self._clock
        self._pruning.start(interval, now=True)

    def stop_pruning(self) -> None:
        pruning, self._pruning = getattr(self, "_pruning", None), None
        if pruning is not None and pruning.running:
            pruning.stop()
