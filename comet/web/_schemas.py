"""
Building blocks of the request-body and representation schemas.

Every request body is a JSON object with no fields beyond those listed
(strict), so a misspelt field is a 400 that names it rather than a silent
no-op.  Every representation is documented as exactly what the handler
returns (L{resource}): its fields, their types and which are always there;
the test suite validates every answer it gets against the document
(C{tests/_conformance.py}), so the two cannot drift apart.
"""

from comet.names import NAME_PATTERN

#: A name a client chooses (its pattern bounds its length: 1 to 64).
NAME = {"type": "string", "pattern": NAME_PATTERN}
BOOL = {"type": "boolean"}
STRING = {"type": "string"}
INTEGER = {"type": "integer"}
COUNT = {"type": "integer", "minimum": 0}
#: Seconds since the epoch.
TIME = {"type": "integer", "minimum": 0}
#: A URI of this API (a path).
URI = {"type": "string", "pattern": "^/"}


def obj(required: tuple[str, ...] = (), **properties) -> dict:
    """A strict object schema with C{properties}, of which C{required} must be present."""
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


#: The body of an action or DELETE that takes no parameters.
EMPTY = obj()


def nullable(schema: dict) -> dict:
    """C{schema} or C{null}."""
    return {"anyOf": [schema, {"type": "null"}]}


def enum(*values: str) -> dict:
    return {"enum": list(values)}


def actions(*names: str) -> dict:
    """The C{actions} field: some of C{names}, each mapped to its URI."""
    return obj(**{name: URI for name in names})


def resource(title: str, optional: tuple[str, ...] = (), **properties) -> dict:
    """
    A representation: an object with exactly C{properties}, each always
    present except those in C{optional}.  C{title} names it in the OpenAPI
    document's components.
    """
    schema = obj(tuple(p for p in properties if p not in optional), **properties)
    schema["title"] = title
    return schema


def listing(schema: dict) -> dict:
    """A collection: a JSON array of C{schema}."""
    return {"type": "array", "items": schema}
