"""
Building blocks of the request-body schemas.

Every body is a JSON object with no fields beyond those listed (strict), so a
misspelt field is a 400 that names it rather than a silent no-op.
"""

from comet.names import NAME_PATTERN

NAME = {"type": "string", "pattern": NAME_PATTERN}
BOOL = {"type": "boolean"}


def obj(required: tuple[str, ...] = (), **properties) -> dict:
    """A strict object schema with C{properties}, of which C{required} must be present."""
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


#: The body of an action or DELETE that takes no parameters.
EMPTY = obj()
