"""
The OpenAPI 3 document of the API, generated from the route table and the
request schemas, so it cannot drift from what is served.  Served at
C{/openapi.json}.
"""

from __future__ import annotations

import re

from comet.names import NAME_PATTERN
from comet.web._serve import NAME_PARAMS
from comet.web._table import JSON, PUBLIC, ROUTES, TICKET, RouteTable, Response

ROUTES.path("openapi", "/openapi.json")

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")

ERROR = {
    "type": "object",
    "required": ["code", "error", "reason"],
    "properties": {
        "code": {"type": "integer"},
        "error": {"type": "string"},
        "reason": {"type": "string"},
    },
}

#: What each method answers on success, besides errors.
_SUCCESS = {"GET": "200", "PUT": "200", "DELETE": "204"}


def _parameters(pattern: str) -> list[dict]:
    params = []
    for converter, name in _PARAM.findall(pattern):
        if converter == "int":
            schema = {"type": "integer"}
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
            ok_content = {JSON: {"schema": {}}}
        else:
            ok_content = {endpoint.produces: {"schema": {"type": "string", "format": "binary"}}}
        responses = {
            "default": {"description": "an error", "content": {JSON: {"schema": ERROR}}},
        }
        if endpoint.method == "POST":
            responses["200"] = {"description": "the resource after the action", "content": ok_content}
            responses["201"] = {"description": "created", "content": ok_content}
            responses["202"] = {"description": "a task", "content": ok_content}
        elif endpoint.method == "DELETE":
            responses["204"] = {"description": "deleted"}
        else:
            responses[_SUCCESS[endpoint.method]] = {"description": "OK", "content": ok_content}
        operation = {
            "operationId": f"{endpoint.method.lower()}_{endpoint.path.replace('.', '_')}",
            "summary": endpoint.summary,
            "responses": responses,
        }
        if endpoint.role in (PUBLIC, TICKET):
            operation["security"] = []
        else:
            operation["x-comet-role"] = endpoint.role
        if endpoint.schema is not None:
            operation["requestBody"] = {
                "required": endpoint.method in ("PUT",) or bool(endpoint.schema.get("required")),
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
