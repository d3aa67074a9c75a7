"""
The OpenAPI 3 document of the API, generated from the route table and the
request schemas, so it cannot drift from what is served.  Served at
C{/openapi.json}.
"""

from __future__ import annotations

import re

from comet.names import NAME_PATTERN
from comet.web._errors import ERROR_WORDS
from comet.web._serve import NAME_PARAMS
from comet.web._table import JSON, PUBLIC, ROUTES, TICKET, RouteTable, Response
from comet.web.tasks import STATUSES

ROUTES.path("openapi", "/openapi.json")

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")

ERROR = {
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
TASK = {
    "type": "object",
    "required": ["id", "status", "message", "target_uri", "progress", "created", "updated", "href"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "status": {"enum": list(STATUSES)},
        "message": {"type": "string"},
        "target_uri": {"type": "string"},
        "progress": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
        "created": {"type": "integer"},
        "updated": {"type": "integer"},
        "href": {"type": "string", "pattern": "^/tasks/[0-9]+$"},
    },
}

#: A resource, or something with no URI of its own (a zpool, /health): an
#: object whose C{href}, when it has one, is a URI.
_OBJECT = {"type": "object", "properties": {"href": {"type": "string", "pattern": "^/"}}}

#: A JSON success body: an object, or a list of them.
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
         "schema": {"enum": ["vnc", "serial"]}},
    ],
}

#: What each method answers on success, besides errors.
_SUCCESS = {"GET": "200", "PUT": "200", "DELETE": "204"}


def _parameters(pattern: str) -> list[dict]:
    params = []
    for converter, name in _PARAM.findall(pattern):
        if converter == "int":
            # Werkzeug's int converter takes digits only (no sign); ids are
            # SQLite INTEGERs (signed 64-bit).
            schema = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
        elif name in NAME_PARAMS:
            schema = {"type": "string", "pattern": NAME_PATTERN}
        else:
            schema = {"type": "string"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def document(routes: RouteTable = ROUTES) -> dict:
    """The OpenAPI 3.1 document of C{routes} (its schemas are JSON Schema 2020-12)."""
    from comet import __version__

    paths: dict[str, dict] = {}
    for endpoint in routes.endpoints:
        pattern = routes.pattern(endpoint.path)
        path = _PARAM.sub(lambda m: "{" + m.group(2) + "}", pattern)
        item = paths.setdefault(path, {})
        parameters = _parameters(pattern)
        if parameters:
            item["parameters"] = parameters
        if endpoint.produces == JSON:
            ok_content = {JSON: {"schema": _JSON_BODY}}
        else:
            ok_content = {endpoint.produces: {"schema": {"type": "string", "format": "binary"}}}
        responses = {
            "default": {"description": "an error", "content": {JSON: {"schema": ERROR}}},
        }
        if endpoint.method == "POST":
            responses["200"] = {"description": "the resource after the action", "content": ok_content}
            responses["201"] = {"description": "created", "content": ok_content}
            responses["202"] = {"description": "a task", "content": {JSON: {"schema": TASK}}}
        elif endpoint.method == "DELETE":
            responses["204"] = {"description": "deleted"}
        else:
            responses[_SUCCESS[endpoint.method]] = {"description": "OK", "content": ok_content}
        operation = {
            "operationId": f"{endpoint.method.lower()}_{endpoint.path.replace('.', '_')}",
            "summary": endpoint.summary,
            "responses": responses,
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
                "content": {JSON: {"schema": endpoint.schema}},
            }
        item[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Comet", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "password": {"type": "http", "scheme": "basic"},
            }
        },
        "security": [{"token": []}, {"password": []}],
    }


@ROUTES.route("GET", "openapi")
async def openapi(models, request, body):
    """This document: the API in OpenAPI 3."""
    return Response(document())
