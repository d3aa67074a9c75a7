"""
The Klein application, built from its own route table.

L{CometAPI} registers one Klein route per path of its table (by default a new
one of the whole API, L{comet.web.routes.api_routes}), with every method
the table has for it, so Werkzeug itself answers 404 for an unknown URI and 405
(with C{Allow}) for a method the path lacks; both get the contract's JSON body
here.  It also counts requests in flight, so that the daemon can let them finish
when it stops.
"""

from __future__ import annotations

import time
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import IntegerConverter

from comet.metrics import UNMATCHED
from comet.web._auth import Authenticator, Guard
from comet.web._errors import HTTPError
from comet.web._serve import render_error, serve
from comet.web._table import RouteTable
from comet.web.events import EventStreams
from comet.web.routes import api_routes


class _ASCIIIntegerConverter(IntegerConverter):
    """C{<int:…>} of ASCII digits only: Werkzeug's C{\\d+} also takes other
    scripts' digits, so that C{/tasks/٣} was C{/tasks/3}."""

    regex = r"[0-9]+"


#: Sent with every answer: no content sniffing (a JSON error is never run as
#: a script or page), and no page of Comet (the console) framed by another
#: site's (clickjacking).
SECURITY_HEADERS = {
    b"X-Content-Type-Options": b"nosniff",
    b"Content-Security-Policy": b"frame-ancestors 'none'",
}


class _Resource(KleinResource):
    """A Klein resource that answers a non-UTF-8 URI with a JSON 400 and counts requests."""

    def __init__(self, app: Klein, started: Callable[[IRequest], None]):
        """@param started: told of each request served (L{CometAPI} counts them)."""
        super().__init__(app)
        self._started = started

    def render(self, request: IRequest):
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        try:
            unquote_to_bytes(request.path).decode("utf-8")
        except UnicodeDecodeError:
            return render_error(request, 400, "the URI is not valid UTF-8")
        self._started(request)
        return super().render(request)


class CometAPI:
    """
    The HTTP face of Comet.

    @ivar models: what the handlers act on (L{comet.model.Models}); passed to
        every handler as its first argument.
    @ivar guard: who may call what (L{comet.web._auth.Guard}); by default
        credentials checked against the users of C{models.users}.
    """

    def __init__(self, models: Any, routes: RouteTable | None = None, guard: Any = None,
                 metrics: Any = None, request_log: Any = None, clock: Any = None,
                 event_buffer: int = 256, event_heartbeat: float = 15.0,
                 login_token_lifetime: int = 12 * 3600):
        """
        @param metrics: where each answered request is counted
            (L{comet.metrics.Metrics.request}); C{None}: not counted.
        @param request_log: where each answered request is logged
            (L{comet.logs.RequestLog}); C{None}: not logged.
        @param clock: the reactor (C{GET /events}' heartbeats, by default the global one).
        @param event_buffer: events queued per C{GET /events} client whose
            connection is full; more and it is dropped.
        @param event_heartbeat: seconds between the streams' keep-alive comments.
        @param login_token_lifetime: seconds a token of C{POST /login} lasts.
        """
        self.models = models
        self.metrics = metrics
        self.request_log = request_log
        #: This app's own table: what it routes, and what its OpenAPI document says.
        self.routes = api_routes() if routes is None else routes
        if guard is None:
            users = getattr(models, "users", None)
            if users is None:
                raise ValueError("CometAPI needs a guard, or models with users")
            guard = Guard(Authenticator(users), users)
        self.guard = guard
        if clock is None:
            from twisted.internet import reactor as clock
        self._stream_settings = (clock, event_buffer, event_heartbeat)
        self._streams: EventStreams | None = None
        self.login_token_lifetime = login_token_lifetime
        self.app = Klein()
        self.app.url_map.converters["int"] = _ASCIIIntegerConverter
        self._in_flight = 0
        self._drained: list[Deferred] = []
        self._build()

    def _build(self) -> None:
        by_path: dict[str, dict] = {}
        for endpoint in self.routes.endpoints:
            by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint
        #: Route name -> its URI pattern, as the request log shows it.
        self._patterns = {path: self.routes.pattern(path) for path in by_path}
        for path, endpoints in by_path.items():
            self.app.route(
                self._patterns[path],
                methods=sorted(endpoints),
                endpoint=path,
                strict_slashes=False,
            )(self._view(endpoints))
        self.app.handle_errors(HTTPException)(self._routing_error)

    def _view(self, endpoints: dict):
        route = next(iter(endpoints.values())).path

        def view(request: IRequest, **params):
            request.comet_route = route
            request.comet_streams = self.event_streams
            request.comet_token_lifetime = self.login_token_lifetime
            method = request.method.decode("ascii")
            endpoint = endpoints.get(method) or endpoints.get("GET")  # HEAD is GET
            served = ensureDeferred(serve(self.models, endpoint, request, params, self.guard))
            if method in ("GET", "HEAD"):
                return served   # a read the client gave up on may stop where it is
            return _shielded(served)

        return view

    def _routing_error(self, request: IRequest, failure) -> Deferred:
        return ensureDeferred(self._routing_error_for(request, failure))

    async def _routing_error_for(self, request: IRequest, failure) -> bytes:
        # An unknown URI or method tells nothing to a caller without credentials.
        try:
            request.comet_identity = await self.guard.identify(request)
        except HTTPError as e:
            return render_error(request, e.code, e.reason, e.headers)
        error = failure.value
        if isinstance(error, MethodNotAllowed):
            allowed = sorted(set(error.valid_methods or []))
            return render_error(
                request,
                405,
                f"{request.method.decode('ascii', 'replace')} is not allowed here;"
                f" allowed: {', '.join(allowed)}",
                {"Allow": ", ".join(allowed)},
            )
        if isinstance(error, NotFound):
            path = request.path.decode("utf-8", "replace")
            return render_error(request, 404, f"no resource at {path}")
        headers = {}
        new_url = getattr(error, "new_url", None)
        if new_url:
            headers["Location"] = new_url
        return render_error(request, error.code or 500, error.description or "error", headers)

    def event_streams(self) -> EventStreams | None:
        """The clients of C{GET /events} (made at the first; C{None}: the models keep no event log)."""
        if self._streams is None:
            events = getattr(self.models, "events", None)
            if events is not None:
                clock, buffer, heartbeat = self._stream_settings
                self._streams = EventStreams(events, self.routes, clock, buffer, heartbeat)
        return self._streams

    def close_streams(self) -> None:
        """End every C{GET /events} stream (the daemon stops; they would never end)."""
        if self._streams is not None:
            self._streams.close_all()

    def resource(self) -> KleinResource:
        """The twisted.web resource to serve."""
        return _Resource(self.app, self._started)

    def _timer(self) -> float:
        return self.metrics.timer() if self.metrics is not None else time.monotonic()

    def _started(self, request: IRequest) -> None:
        self._in_flight += 1
        began = self._timer()
        if self.request_log is not None:
            request.comet_request_id = self.request_log.new_id()
            request.setHeader(b"X-Request-Id", request.comet_request_id.encode("ascii"))
        request.notifyFinish().addBoth(self._finished, request, began)

    def _finished(self, _, request: IRequest, began: float):
        self._in_flight -= 1
        if self.metrics is not None or self.request_log is not None:
            route = getattr(request, "comet_route", UNMATCHED)
            method = request.method.decode("ascii", "replace")
            took = self._timer() - began
        if self.metrics is not None:
            # In memory only (a few additions): the scrape reads them.
            self.metrics.request(route, method, request.code, took)
        if self.request_log is not None:
            # An event; writing it is the log observer's job.
            identity = getattr(request, "comet_identity", None)
            self.request_log.answered(
                request.comet_request_id, identity.name if identity is not None else None,
                self._patterns.get(route, route), method, request.code, took)
        if self._in_flight == 0:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def drain(self) -> Deferred:
        """A Deferred that fires when no request is in flight."""
        if self._in_flight == 0:
            return succeed(None)
        d = Deferred()
        self._drained.append(d)
        return d


def _shielded(served: Deferred) -> Deferred:
    """
    C{served}'s result, through a Deferred whose cancellation does not reach
    it.  Klein cancels the view when the client disconnects; a change
    request cancelled half way (a VM defined, not started; a zvol made, not
    recorded) would stop at an arbitrary await, where its undo may not run.
    A change, once admitted, runs to its end (and to the audit log) whether
    or not anyone is still there to read the answer.
    """
    answer: Deferred = Deferred()   # no canceller: cancel() only fails this one
    served.chainDeferred(answer)
    return answer
