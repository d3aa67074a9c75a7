"""
Route tables: what an app serves, each endpoint with its declared input,
answers and errors.

Every URI Comet serves is named once (L{comet.web.paths}); each resource
module declares its endpoints (L{Routes}, like C{flocker}'s C{structured}: the
body's schema, each success status with its body's schema, the error
statuses); each app builds its own L{RouteTable} from those declarations
(L{comet.web.routes.api_routes}).  The table drives routing (the Klein app is
built from it), the C{Allow} header of a 405, authorisation, and the OpenAPI
document, against which the tests check every answer; so none of those can
disagree with the others or with a hand-written string.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote

import attrs

JSON = "application/json"

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")

# Who may call an endpoint.  Roles are ordered: each has every right of those
# below it.  An endpoint that does not name its role gets the safe default,
# VIEWER for a GET and ADMIN for anything else, so that a new endpoint is
# never open by omission.
VIEWER = "viewer"
OPERATOR = "operator"
ADMIN = "admin"
ROLE_RANKS = {VIEWER: 1, OPERATOR: 2, ADMIN: 3}
#: No credentials needed (the health check, static pages that hold no secret).
PUBLIC = "public"
#: No credentials needed: the URI carries a single-use ticket that only an
#: operator could obtain (the console's websocket), which the handler checks.
TICKET = "ticket"


def default_role(method: str) -> str:
    return VIEWER if method in ("GET", "HEAD") else ADMIN


def allows(role: str, needed: str) -> bool:
    """Whether a user of C{role} may call an endpoint that needs C{needed}."""
    if needed in (PUBLIC, TICKET):
        return True
    return ROLE_RANKS.get(role, 0) >= ROLE_RANKS[needed]


@attrs.frozen
class Endpoint:
    """
    One method on one path.

    @ivar path: the name of the path in the table (e.g. C{"cluster"}).
    @ivar handler: C{async handler(api, request, body, **params)}; returns a
        representation (200), a L{Response}, or raises a domain error.
    @ivar schema: the JSON schema of the request body, or C{None} when the
        method takes no body (GET).
    @ivar produces: the media type of a successful answer.
    @ivar role: the least role that may call it (L{VIEWER}, L{OPERATOR},
        L{ADMIN}), or L{PUBLIC} / L{TICKET}.
    @ivar answers: what it answers on success: status code -> the JSON
        schema of the body (C{None}: no body, or a body of C{produces} that
        is not JSON).  C{None} when not declared (the document then says
        only "an object").
    @ivar errors: the error statuses its handler raises (a domain error:
        404, 409, 503, ...), besides those the request pipeline answers for
        every endpoint (L{comet.web.openapi} adds those).
    """

    method: str
    path: str
    handler: Callable[..., Any]
    schema: Mapping[str, Any] | None = None
    produces: str = JSON
    summary: str = ""
    role: str = ADMIN
    #: Written to the audit log even though it is no change (a console ticket).
    audited: bool = False
    answers: Mapping[int, Any] | None = None
    errors: tuple[int, ...] = ()


@attrs.frozen
class Response:
    """An answer other than a plain 200 with a JSON body."""

    body: Any = None
    code: int = 200
    headers: Mapping[str, str] = attrs.Factory(dict)
    #: When set, the body is these raw bytes of type C{content_type}, not JSON.
    raw: bytes | None = None
    content_type: str = JSON
    #: When set, the body is this JSON text, already encoded (UTF-8), answered
    #: as C{body} would be (L{comet.web._listing}).
    encoded: bytes | None = None


class Paths:
    """
    Named URI patterns (Werkzeug syntax: C{/cluster/<name>}), and the URIs
    made from them: every C{href} and C{actions} field of a representation.
    """

    def __init__(self, patterns: Mapping[str, str] = ()):
        self._paths: dict[str, str] = {}
        self._templates: dict[str, tuple[str, tuple[str, ...]]] = {}
        for name, pattern in dict(patterns).items():
            self.add(name, pattern)

    def add(self, name: str, pattern: str) -> None:
        if name in self._paths and self._paths[name] != pattern:
            raise ValueError(f"path {name!r} is already {self._paths[name]!r}")
        self._paths[name] = pattern

    def __contains__(self, name: str) -> bool:
        return name in self._paths

    def pattern(self, name: str) -> str:
        return self._paths[name]

    def patterns(self) -> dict[str, str]:
        return dict(self._paths)

    def params(self, name: str) -> list[str]:
        """The names of the variable segments of path C{name}, in order."""
        return [m.group(2) for m in _PARAM.finditer(self._paths[name])]

    def href(self, name: str, /, **params: object) -> str:
        """The URI of path C{name} with its variable segments filled in."""
        form, names = self._template(name)
        return form.format(*[_segment(str(params[n])) for n in names])

    def hrefs(self, name: str, param: str, values: Iterable[str], /, **params: object) -> list[str]:
        """
        The URIs of path C{name} for each of C{values} as its parameter
        C{param}, the others C{params}: what L{href} gives for each, but a
        list of 10,000 VMs builds them at the cost of one concatenation each
        (the rest of the path is filled once, and one match tells whether any
        value needs quoting).
        """
        form, names = self._template(name)
        marker = "\x00"  # quoted (%00) wherever a parameter holds it
        head, _, tail = form.format(
            *[marker if n == param else _segment(str(params[n])) for n in names]
        ).partition(marker)
        values = list(values)
        if not _UNQUOTED("".join(values)):
            values = [_segment(v) for v in values]
        return [head + v + tail for v in values]

    def _template(self, name: str) -> tuple[str, tuple[str, ...]]:
        template = self._templates.get(name)
        if template is None:
            # "/cluster/<name>/vms/<vm>" -> ("/cluster/{}/vms/{}", ("name", "vm")):
            # a format string and the parameters in order.  A list builds
            # thousands of hrefs per request: no regex, no loop per call.
            path = self._paths[name]
            names = tuple(m.group(2) for m in _PARAM.finditer(path))
            literal = _PARAM.sub("\x00", path).replace("{", "{{").replace("}", "}}")
            template = self._templates[name] = (literal.replace("\x00", "{}"), names)
        return template

    def actions(self, path: str, valid: Iterable[str], /, **params: object) -> dict[str, str]:
        """
        The C{actions} field: each action in C{valid} mapped to its URI, which
        is the path named C{"<path>.<action>"}.
        """
        return {action: self.href(f"{path}.{action}", **params) for action in valid}


#: What C{quote} never changes: a segment made only of these is its own quoting.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch


def _role(method: str, role: str | None) -> str:
    """The role an endpoint needs: C{role}, or the safe default of C{method}."""
    needed = default_role(method) if role is None else role
    if needed not in ROLE_RANKS and needed not in (PUBLIC, TICKET):
        raise ValueError(f"unknown role {role!r}")
    return needed


def _endpoint(method: str, path: str, handler: Callable[..., Any],
              schema: Mapping[str, Any] | None, produces: str, role: str | None,
              audited: bool, answers: Mapping[int, Any] | None, errors: Iterable[int]) -> Endpoint:
    needed = _role(method, role)
    doc = (handler.__doc__ or "").strip().splitlines()
    return Endpoint(method, path, handler, schema, produces, doc[0] if doc else "", needed,
                    audited, answers, tuple(sorted(set(errors))))


class Routes:
    """
    The endpoints one resource module declares, in the order it declares
    them: what it adds to the table of each app (L{RouteTable.add}).  Like
    the routes of a class-level C{Klein()}, declared once and served by each
    instance, but a declaration only: no table is filled on import.
    """

    def __init__(self):
        self.endpoints: list[Endpoint] = []

    def route(
        self,
        method: str,
        path: str,
        schema: Mapping[str, Any] | None = None,
        produces: str = JSON,
        role: str | None = None,
        audited: bool = False,
        answers: Mapping[int, Any] | None = None,
        errors: Iterable[int] = (),
    ) -> Callable:
        """
        Declare a handler as the C{method} endpoint of path C{path}, callable
        by C{role} and above (by default L{default_role} of C{method}), that
        takes a body of C{schema}, answers C{answers} (L{Endpoint.answers})
        or one of C{errors}.
        """
        _role(method, role)   # an unknown role is refused here, not at the first handler

        def declare(handler):
            self.endpoints.append(
                _endpoint(method, path, handler, schema, produces, role, audited, answers, errors))
            return handler

        return declare


class RouteTable:
    """
    One app's table: named URI patterns and the endpoints on them.  Each
    L{comet.web.CometAPI} has its own (L{comet.web.routes.api_routes} makes
    a new one from the declarations), so two apps never share routes.
    """

    def __init__(self, paths: Paths | Mapping[str, str] = ()):
        self._paths = Paths(paths.patterns() if isinstance(paths, Paths) else paths)
        self.endpoints: list[Endpoint] = []

    def path(self, name: str, pattern: str) -> None:
        """Name a URI pattern (Werkzeug syntax: C{/cluster/<name>})."""
        self._paths.add(name, pattern)

    def pattern(self, name: str) -> str:
        return self._paths.pattern(name)

    def paths(self) -> dict[str, str]:
        return self._paths.patterns()

    def params(self, name: str) -> list[str]:
        """The names of the variable segments of path C{name}, in order."""
        return self._paths.params(name)

    def _register(self, endpoint: Endpoint) -> None:
        if endpoint.path not in self._paths:
            raise ValueError(f"unknown path {endpoint.path!r}")
        if any(e.method == endpoint.method and e.path == endpoint.path for e in self.endpoints):
            raise ValueError(f"{endpoint.method} {endpoint.path} is already routed")
        self.endpoints.append(endpoint)

    def route(
        self,
        method: str,
        path: str,
        schema: Mapping[str, Any] | None = None,
        produces: str = JSON,
        role: str | None = None,
        audited: bool = False,
        answers: Mapping[int, Any] | None = None,
        errors: Iterable[int] = (),
    ) -> Callable:
        """
        Decorate a handler as the C{method} endpoint of path C{path} of this
        table (as L{Routes.route} declares one).
        """
        _role(method, role)   # an unknown role is refused here, not at the first handler

        def register(handler):
            self._register(
                _endpoint(method, path, handler, schema, produces, role, audited, answers, errors))
            return handler

        return register

    def add(self, routes: Routes) -> None:
        """Serve the endpoints a resource module declares (L{Routes})."""
        for endpoint in routes.endpoints:
            self._register(endpoint)

    def methods(self, path: str) -> list[str]:
        return [e.method for e in self.endpoints if e.path == path]

    def href(self, name: str, /, **params: object) -> str:
        """The URI of path C{name} with its variable segments filled in."""
        return self._paths.href(name, **params)

    def hrefs(self, name: str, param: str, values: Iterable[str], /, **params: object) -> list[str]:
        """The URIs of path C{name} for each of C{values} (L{Paths.hrefs})."""
        return self._paths.hrefs(name, param, values, **params)

    def actions(self, path: str, valid: Iterable[str], /, **params: object) -> dict[str, str]:
        """The C{actions} field (L{Paths.actions})."""
        return self._paths.actions(path, valid, **params)


def _segment(value: str) -> str:
    """
    C{value} quoted as one path segment.  Names (L{comet.names}) need no
    quoting, which one match tells; anything else is quoted and remembered.
    (Only remembering did not do: a list of more VMs than the cache holds
    cycles through the names in order and never hits.)
    """
    if _UNQUOTED(value):
        return value
    return _quoted(value)


@functools.lru_cache(maxsize=1024)
def _quoted(value: str) -> str:
    return quote(value, safe="")

