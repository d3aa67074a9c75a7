"""
The OpenAPI 3 document of the API, generated from an app's route table: each
endpoint's declared request schema, answers and errors, so it cannot drift
from what is served.  Each app serves its own at C{/openapi.json}
(L{serve_document}).
"""

from __future__ import annotations

import re

from comet.model.console import KINDS as CONSOLE_KINDS
from comet.names import NAME_PATTERN
from comet.web._errors import ERROR_WORDS
from comet.web._serve import NAME_PARAMS
from comet.web._table import JSON, PUBLIC, TICKET, Endpoint, RouteTable, Response
from comet.model.events import KINDS as EVENT_KINDS
from comet.model.events import TYPES as EVENT_TYPES
from comet.web.audit import QUERY as AUDIT_QUERY
from comet.web.events import EVENT_STREAM, SSE_EVENT
from comet.web.tasks import STATUSES
from comet.web.tasks import TASK as _TASK
from comet.web.storage import SERVER
from comet.web.templates import CPUS
from comet.web.vms import MAC
from comet.web.volume_requests import COMPRESSED_URL, URL, url_schema

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")

#: The body of every error.
ERROR = {
    "title": "Error",
    "type": "object",
    "required": ["code", "error", "reason"],
    "additionalProperties": False,
    "properties": {
        "code": {"type": "integer", "minimum": 400, "maximum": 599},
        "error": {"enum": sorted(set(ERROR_WORDS.values()))},
        "reason": {"type": "string"},
    },
}

#: A Task (C{comet/web/tasks.py}): the body of every 202.
TASK = _TASK

#: An endpoint that declares no answers (a route table of a test): an
#: object whose C{href}, when it has one, is a URI, or a list of them.
_OBJECT = {"type": "object", "properties": {"href": {"type": "string", "pattern": "^/"}}}
_JSON_BODY = {"oneOf": [_OBJECT, {"type": "array", "items": _OBJECT}]}

#: The query parameters an endpoint reads, by C{(method, path name)}.
_QUERY = {
    ("GET", "tasks"): [
        {"name": "status", "in": "query", "required": False,
         "schema": {"enum": list(STATUSES)}},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
        {"name": "offset", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 0, "maximum": 2**62, "default": 0}},
    ],
    ("GET", "vm.console"): [
        {"name": "type", "in": "query", "required": False,
         "schema": {"enum": list(CONSOLE_KINDS), "default": "vnc"}},
    ],
    ("GET", "auditlog"): [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in AUDIT_QUERY.items()
    ],
    ("GET", "events"): [
        {"name": "type", "in": "query", "required": False,
         "schema": {"enum": sorted(EVENT_TYPES) + list(EVENT_KINDS)}},
        {"name": "resource", "in": "query", "required": False,
         "schema": {"type": "string", "maxLength": 1024,
                    "pattern": "^/[^?#\\u0000-\\u001f\\u007f]*$"}},
        {"name": "timeout", "in": "query", "required": False,
         "schema": {"type": "number", "minimum": 0, "maximum": 86400}},
        {"name": "last_event_id", "in": "query", "required": False,
         "schema": {"type": "string"}},
        {"name": "Last-Event-ID", "in": "header", "required": False,
         "schema": {"type": "string"}},
    ],
}

_DESCRIPTIONS = {
    101: "the websocket, once the ticket is checked",
    200: "OK",
    201: "created: the new resource (its URI in Location)",
    202: "accepted: the task that does the work (its URI in Location)",
    204: "done; no body",
    303: "see the URI in Location",
    400: "bad request: a body, URI or query parameter that breaks the rules (the reason names it)",
    401: "no credentials, or wrong ones",
    403: "the caller's role may not do this (or the ticket is not good)",
    404: "no such resource",
    406: "the Accept header excludes what this answers",
    409: "not possible in the current state (the reason names the state)",
    413: "the request body is too large",
    415: "the request body is not application/json",
    429: "too many password guesses (Retry-After says when to try again)",
    500: "a bug: the daemon's log has the details",
    502: "a host or storage server failed the command",
    503: "a compute host or storage server does not answer (the reason names it)",
}

_LOCATION = {"description": "the URI of the resource", "schema": {"type": "string"}}


def openapi_path(pattern: str) -> str:
    """The OpenAPI path of a route pattern: C{/tasks/<int:id>} -> C{/tasks/{id}}."""
    return _PARAM.sub(lambda m: "{" + m.group(2) + "}", pattern)


def _parameters(pattern: str) -> list[dict]:
    params = []
    for converter, name in _PARAM.findall(pattern):
        if converter == "int":
            # Werkzeug's int converter takes digits only (no sign); ids are
            # SQLite INTEGERs (signed 64-bit).
            schema = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
        elif name in NAME_PARAMS:
            schema = {"type": "string", "pattern": NAME_PATTERN}
        elif name == "mac":
            # A NIC's MAC (any case); a path that is none names no NIC: 404.
            schema = dict(MAC)
        else:
            schema = {"type": "string"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def error_statuses(endpoint: Endpoint, pattern: str) -> list[int]:
    """
    The error statuses C{endpoint} can answer: those its handler declares,
    and those the request pipeline (L{comet.web._serve.serve}, the guard)
    answers before it: a bad C{Content-Length} (400) or a body too large
    (413) anywhere, an C{Accept} that excludes it (406), a foreign C{Host}
    or another site's change request (403, L{comet.web._origin}); missing
    credentials (401), password guesses over the limit (429) or password
    checks all busy (503), and a role too low (403); a name in the URI that
    breaks the rule (400) or names nothing (404), a body that is not JSON
    (415) or breaks the schema (400); and 500 for a bug.
    """
    codes = {400, 403, 406, 413, 500, *endpoint.errors}
    if endpoint.role not in (PUBLIC, TICKET):
        codes.update((401, 429, 503))
    if _PARAM.search(pattern):
        codes.add(404)
    if endpoint.schema is not None:
        codes.add(415)
    return sorted(codes)


class _Components:
    """The named schemas (those with a C{title}), referred to by C{$ref}."""

    def __init__(self):
        self.schemas: dict[str, dict] = {}

    def ref(self, schema):
        if isinstance(schema, dict) and "title" in schema:
            name = schema["title"]
            if self.schemas.setdefault(name, schema) is not schema:
                raise ValueError(f"two schemas are titled {name!r}")
            return {"$ref": f"#/components/schemas/{name}"}
        if isinstance(schema, dict) and schema.get("type") == "array":
            return {**schema, "items": self.ref(schema["items"])}
        return schema


def _responses(endpoint: Endpoint, pattern: str, components: _Components) -> dict:
    if endpoint.answers is None:
        return _undeclared(endpoint)
    error = {JSON: {"schema": components.ref(ERROR)}}
    responses: dict[str, dict] = {}
    for code, schema in sorted(endpoint.answers.items()):
        response: dict = {"description": _DESCRIPTIONS.get(code, "OK")}
        if schema is not None:
            response["content"] = {JSON: {"schema": components.ref(schema)}}
        elif endpoint.produces == EVENT_STREAM and code == 200:
            # OpenAPI 3.1: the schema of a stream's media type describes each event.
            response["content"] = {EVENT_STREAM: {"schema": SSE_EVENT}}
        elif endpoint.produces != JSON and code == 200:
            response["content"] = {endpoint.produces: {"schema": {"type": "string", "format": "binary"}}}
        if code in (201, 202, 303):
            response["headers"] = {"Location": {**_LOCATION, "required": True}}
        elif endpoint.method == "PUT":
            # A rename answers with the new URI.
            response["headers"] = {"Location": _LOCATION}
        responses[str(code)] = response
    for code in error_statuses(endpoint, pattern):
        response = {"description": _DESCRIPTIONS.get(code, "an error"), "content": error}
        if code == 401:
            response["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
        responses[str(code)] = response
    return responses


def _undeclared(endpoint: Endpoint) -> dict:
    """The responses of an endpoint that declares none: any object, any error."""
    if endpoint.produces == JSON:
        ok_content = {JSON: {"schema": _JSON_BODY}}
    else:
        ok_content = {endpoint.produces: {"schema": {"type": "string", "format": "binary"}}}
    responses = {"default": {"description": "an error", "content": {JSON: {"schema": ERROR}}}}
    if endpoint.method == "POST":
        responses["200"] = {"description": "the resource after the action", "content": ok_content}
        responses["201"] = {"description": "created", "content": ok_content}
        responses["202"] = {"description": "a task", "content": {JSON: {"schema": TASK}}}
    elif endpoint.method == "DELETE":
        responses["204"] = {"description": "deleted"}
    else:
        responses["200"] = {"description": "OK", "content": ok_content}
    return responses


def _bounded(schema, live: dict):
    """
    C{schema} with the bounds that come from the configuration and the
    hosts rather than from the code, as the models check them (a 400
    beyond): the CPU count at most C{live["cpus_max"]}, the CPUs of the
    largest compute host now; a storage server one of C{live["servers"]},
    the configured ones.
    """
    if schema is CPUS and live.get("cpus_max") is not None:
        return {**CPUS, "maximum": min(live["cpus_max"], CPUS["maximum"]),
                "description": "at most the CPUs of the largest compute host"}
    if schema is SERVER and live.get("servers") is not None:
        return {"enum": list(live["servers"]), "description": "a configured storage server"}
    if schema is URL and live.get("names_only"):
        # Without [storage] download_allow, most address literals are refused
        # (400): the document offers names only (public literals still work).
        return url_schema(literals=False)
    if schema is COMPRESSED_URL and live.get("names_only"):
        return url_schema(literals=False, compressed=True)
    if isinstance(schema, dict):
        return {k: _bounded(v, live) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_bounded(v, live) for v in schema]
    return schema


def document(routes: RouteTable, cpus_max: int | None = None,
             servers: list[str] | None = None, names_only: bool = False) -> dict:
    """
    The OpenAPI 3.1 document of C{routes} (its schemas are JSON Schema
    2020-12).  C{cpus_max}: the CPUs of the largest compute host, when known
    (a request for more is refused); C{servers}: the configured storage
    servers, when known (a pool on another is refused); C{names_only}: a
    volume's url names its host (downloads may reach no private address).
    """
    live = {"cpus_max": cpus_max, "servers": servers, "names_only": names_only}
    from comet import __version__

    components = _Components()
    paths: dict[str, dict] = {}
    for endpoint in routes.endpoints:
        pattern = routes.pattern(endpoint.path)
        path = openapi_path(pattern)
        item = paths.setdefault(path, {})
        parameters = _parameters(pattern)
        if parameters:
            item["parameters"] = parameters
        operation = {
            "operationId": f"{endpoint.method.lower()}_{endpoint.path.replace('.', '_')}",
            "summary": endpoint.summary,
            "responses": _responses(endpoint, pattern, components),
        }
        if (endpoint.method, endpoint.path) in _QUERY:
            operation["parameters"] = _QUERY[(endpoint.method, endpoint.path)]
        if endpoint.role in (PUBLIC, TICKET):
            operation["security"] = []
        else:
            operation["x-comet-role"] = endpoint.role
        if endpoint.schema is not None:
            operation["requestBody"] = {
                # Content-Type: application/json is required even without a
                # body (415: comet.web._origin), and an empty body is C{{}}:
                # a client sends one always.
                "required": True,
                "content": {JSON: {"schema": _bounded(endpoint.schema, live)}},
            }
        item[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Comet", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "password": {"type": "http", "scheme": "basic"},
            },
        },
        "security": [{"token": []}, {"password": []}],
    }


#: The document itself, as far as its readers rely on it.
DOCUMENT = {"type": "object", "required": ["openapi", "info", "paths"]}


def serve_document(routes: RouteTable):
    """The handler of C{GET /openapi.json} of the app whose table is C{routes}."""

    async def openapi(models, request, body):
        """This document: the API in OpenAPI 3."""
        hosts = getattr(models, "hosts", None)
        cpus_max = await hosts.max_cpus() if hosts is not None else None
        storage = getattr(models, "storage", None)
        # None: no server is configured, so every storage operation is a 404.
        servers = (storage.servers() or None) if storage is not None else None
        downloads = getattr(storage, "downloads", None)
        names_only = downloads is not None and not downloads.policy.networks
        return Response(document(routes, cpus_max=cpus_max, servers=servers,
                                 names_only=names_only))

    return openapi
