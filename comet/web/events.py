"""
C{GET /events}: the event log (L{comet.model.events}) as Server-Sent Events.

Each event is one SSE message: C{id:} (what C{Last-Event-ID} resumes from),
C{event:} (its type, C{vm.state}, C{task.progress}, ...) and C{data:}, a JSON
object with C{id}, C{type}, C{href} (the resource's URI, made here), C{time}
and what the event says (a VM's C{state}, a task's C{status}, C{progress},
C{message}).  A resume whose id the log no longer holds (older than the ring,
or of an earlier run of the daemon) gets one C{reset} event first: events
were missed, list the resources again.

A caller sees the events of what it may C{GET}: each event's resource is
checked against the role the route table gives that resource's C{GET}.

Slow and dead clients: each client is a push producer on its connection.
While the transport's buffer is full it is paused, and events wait in a
queue of at most C{buffer} messages; a client whose queue overflows, or that
stays paused for longer than two heartbeats, is disconnected (aborted, not
flushed).  A comment line is sent every C{heartbeat} seconds, so a dead peer
is found by TCP's own errors.  Nothing here blocks or grows without bound.
With no client connected the streams do not follow the log at all.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from comet.errors import InvalidInput, NotFound
from comet.model.events import KINDS, TYPES, Event
from comet.web._table import Routes, allows
from comet.web.paths import PATHS

log = Logger()

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()

#: The path (L{comet.web.paths}) of each kind of resource an event is about.
KIND_PATHS = {
    "cluster": "cluster",
    "vm": "vm",
    "template": "template",
    "volume": "storagevolume",
    "snapshot": "vm.snapshot",
    "task": "task",
    "host": "host",
    "storageserver": "storageserver",
}

EVENT_STREAM = "text/event-stream"

#: One message of the stream, as the OpenAPI document describes it: C{data}
#: is a JSON object (C{id}, C{type}, C{href}, C{time}, what the event says).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "event": {"enum": sorted(TYPES) + ["reset"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "required": ["id", "event", "data"],
}

#: Filters given at most this many times, each at most this long.
MAX_FILTERS = 32
MAX_FILTER_LENGTH = 1024


def _args(request, name: bytes, split: bool) -> list[str]:
    values = request.args.get(name, [])
    if len(values) > MAX_FILTERS:
        raise InvalidInput(f"at most {MAX_FILTERS} {name.decode()} filters")
    out = []
    for value in values:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{name.decode()} is not valid UTF-8") from None
        if len(text) > MAX_FILTER_LENGTH:
            raise InvalidInput(f"a {name.decode()} filter is longer than {MAX_FILTER_LENGTH}")
        if split:
            out.extend(part for part in text.split(",") if part)
        else:
            out.append(text)
    return out


class Filter:
    """
    What one client asked for: C{?type=} (an event type, C{vm.state}, or a
    kind, C{vm}: all of its types; repeated or comma-separated: any of them)
    and C{?resource=} (an C{href}: events of that resource and of those
    under it, C{/cluster/lab} includes its VMs).
    """

    def __init__(self, types: list[str], resources: list[str]):
        for t in types:
            if t not in TYPES and t not in KINDS:
                raise InvalidInput(
                    f"type {t!r} is no event type; types: {', '.join(sorted(TYPES))}"
                    f" (or a kind: {', '.join(KINDS)})")
        for r in resources:
            if not r.startswith("/") or "?" in r or "#" in r or any(
                    c < " " or c == "\x7f" for c in r):
                raise InvalidInput(f"resource {r!r} is not a resource's href (a path like /cluster/lab)")
        self.types = frozenset(types)
        self.resources = tuple(r.rstrip("/") or "/" for r in resources)

    @classmethod
    def of(cls, request) -> "Filter":
        return cls(_args(request, b"type", True), _args(request, b"resource", False))

    def matches(self, event: Event, href: str) -> bool:
        if self.types and event.type not in self.types and event.kind not in self.types:
            return False
        if self.resources and not any(
                href == r or href.startswith(r + "/") or r == "/" for r in self.resources):
            return False
        return True


def href_of(event: Event) -> str:
    return PATHS.href(KIND_PATHS[event.kind], **event.ids)


def _body(event: Event) -> dict:
    body = {"id": event.id, "type": event.type, "href": href_of(event), "time": event.time}
    for key, value in event.data.items():
        if key == "previous":
            body["previous_href"] = PATHS.href(KIND_PATHS[event.kind], **value)
        else:
            body[key] = value
    return body


def message(event_id: str, type: str, body: dict) -> bytes:
    """One SSE message (JSON has no raw newline: one C{data:} line)."""
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\nevent: {type}\ndata: {data}\n\n".encode("utf-8")


HEARTBEAT = b": keep-alive\n\n"


class EventStreams:
    """
    The clients of C{GET /events} of one app.

    @param log: the L{comet.model.events.EventLog}.
    @param routes: the app's L{RouteTable}: who may C{GET} what.
    @param clock: C{seconds()}, C{callLater()} (the reactor).
    @param buffer: messages queued per client while its connection is full.
    @param heartbeat: seconds between keep-alive comments.
    """

    def __init__(self, log, routes, clock, buffer: int = 256, heartbeat: float = 15.0):
        self.log = log
        self._routes = routes
        self.clock = clock
        self.buffer = buffer
        self.heartbeat = heartbeat
        self.clients: set[_Client] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._beat: LoopingCall | None = None
        #: The last event encoded, shared by every client that gets it.
        self._encoded: tuple[str, str, bytes] | None = None
        self._roles: dict[str, str | None] = {}

    def _role_needed(self, kind: str) -> str | None:
        """The role the C{GET} of C{kind}'s resource needs (C{None}: there is no such GET)."""
        if kind not in self._roles:
            path = KIND_PATHS[kind]
            needed = [e.role for e in self._routes.endpoints if e.path == path and e.method == "GET"]
            self._roles[kind] = needed[0] if needed else None
        return self._roles[kind]

    def may_get(self, role: str, event: Event) -> bool:
        needed = self._role_needed(event.kind)
        return needed is not None and allows(role, needed)

    def encoded(self, event: Event) -> tuple[str, bytes]:
        if self._encoded is None or self._encoded[0] != event.id:
            href = href_of(event)
            self._encoded = (event.id, href, message(event.id, event.type, _body(event)))
        return self._encoded[1], self._encoded[2]

    def open(self, request, role: str, filter: Filter, last_id: str | None) -> "_Client":
        client = _Client(self, request, role, filter)
        self.clients.add(client)
        if self._unsubscribe is None:
            self._unsubscribe = self.log.subscribe(self._event)
        if self._beat is None and self.heartbeat > 0:
            self._beat = LoopingCall(self._tick)
            self._beat.clock = self.clock
            self._beat.start(self.heartbeat, now=False)
        client.start(last_id)
        return client

    def closed(self, client: "_Client") -> None:
        self.clients.discard(client)
        if not self.clients:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            if self._beat is not None and self._beat.running:
                self._beat.stop()
            self._beat = None

    def _event(self, event: Event) -> None:
        for client in list(self.clients):
            client.event(event)

    def _tick(self) -> None:
        now = self.clock.seconds()
        for client in list(self.clients):
            client.beat(now)

    def close_all(self) -> None:
        """End every stream (the daemon stops): each client may reconnect and resume."""
        for client in list(self.clients):
            client.finish()


@implementer(IPushProducer)
class _Client:
    """One connected client: a push producer on its request (see the module docstring)."""

    def __init__(self, streams: EventStreams, request, role: str, filter: Filter):
        self._streams = streams
        self._request = request
        self._role = role
        self._filter = filter
        self._queue: list[bytes] = []
        self.paused_since: float | None = None
        self.gone = False
        #: Why it was dropped (for the log and tests), or C{None}.
        self.dropped: str | None = None

    def start(self, last_id: str | None) -> None:
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        request.notifyFinish().addBoth(self._finished)
        request.registerProducer(self, True)
        self._write(b": comet events\n\n")
        if last_id is not None:
            missed = self._streams.log.since(last_id)
            if missed is None:
                self._write(message(self._streams.log.last_id, "reset", {
                    "id": self._streams.log.last_id, "type": "reset",
                    "reason": f"the events after {last_id!r} are no longer known;"
                              " list the resources again",
                }))
            else:
                for event in missed:
                    self.event(event)

    def event(self, event: Event) -> None:
        if self.gone or not self._streams.may_get(self._role, event):
            return
        href, data = self._streams.encoded(event)
        if self._filter.matches(event, href):
            self._write(data)

    def beat(self, now: float) -> None:
        if self.paused_since is not None and now - self.paused_since > 2 * self._streams.heartbeat:
            self.drop("it has read nothing for two heartbeats")
            return
        self._write(HEARTBEAT)

    def _write(self, data: bytes) -> None:
        if self.gone:
            return
        if self.paused_since is not None:
            if len(self._queue) >= self._streams.buffer:
                self.drop(f"it fell more than {self._streams.buffer} events behind")
                return
            self._queue.append(data)
            return
        self._request.write(data)

    def drop(self, why: str) -> None:
        """Disconnect at once: what is buffered for it is thrown away, not flushed."""
        if self.gone:
            return
        log.info("dropping an event stream client: {why}", why=why)
        self.dropped = why
        self._end()
        transport = getattr(getattr(self._request, "channel", None), "transport", None)
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        elif transport is not None:
            transport.loseConnection()

    def finish(self) -> None:
        """End the stream normally (what is written is flushed)."""
        if self.gone:
            return
        self._end()
        self._request.unregisterProducer()
        self._request.finish()

    def _end(self) -> None:
        self.gone = True
        self._queue = []
        self._streams.closed(self)

    def _finished(self, _):
        if not self.gone:
            self._end()

    # IPushProducer ---------------------------------------------------------------

    def pauseProducing(self) -> None:
        if self.paused_since is None:
            self.paused_since = self._streams.clock.seconds()

    def resumeProducing(self) -> None:
        self.paused_since = None
        queue, self._queue = self._queue, []
        for data in queue:
            if self.gone or self.paused_since is not None:
                self._queue.append(data)
            else:
                self._request.write(data)

    def stopProducing(self) -> None:
        if not self.gone:
            self._end()


class _Stream(Resource):
    """Renders the stream on the request (Klein renders a resource a view answers)."""

    isLeaf = True

    def __init__(self, streams: EventStreams, role: str, filter: Filter, last_id, timeout):
        super().__init__()
        self._args = (role, filter, last_id)
        self._streams = streams
        self._timeout = timeout

    def render(self, request):
        client = self._streams.open(request, *self._args)
        if self._timeout is not None and not client.gone:
            call = self._streams.clock.callLater(self._timeout, client.finish)
            request.notifyFinish().addBoth(lambda _: call.active() and call.cancel())
        return NOT_DONE_YET


def _last_id(request) -> str | None:
    header = request.getHeader(b"last-event-id")
    if header is None:
        arg = request.args.get(b"last_event_id")
        header = arg[0] if arg else None
    if header is None:
        return None
    # Any text: one that is no id of this run's log gets a reset event.
    return header.decode("latin-1").strip() or None


def _timeout(request) -> float | None:
    values = request.args.get(b"timeout")
    if not values:
        return None
    try:
        timeout = float(values[0].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        timeout = -1.0
    if not 0 <= timeout <= 86400:
        raise InvalidInput("timeout is a number of seconds from 0 to 86400")
    return timeout


@routes.route("GET", "events", produces=EVENT_STREAM, answers={200: None}, errors=(400,))
async def stream_events(models, request, body) -> Any:
    """
    Follow changes as Server-Sent Events: C{?type=} (a type or kind, e.g.
    C{vm.state}, C{task}) and C{?resource=} (an href and what is under it)
    filter them, C{Last-Event-ID} resumes, C{?timeout=} ends the stream
    after that many seconds.
    """
    filter = Filter.of(request)
    last_id = _last_id(request)
    timeout = _timeout(request)
    made = getattr(request, "comet_streams", None)
    streams = made() if made is not None else None
    if streams is None:
        raise NotFound("this daemon keeps no event log")
    identity = getattr(request, "comet_identity", None)
    role = identity.role if identity is not None else "viewer"
    return _Stream(streams, role, filter, last_id, timeout)
