"""
The contract's request and response rules, applied to every endpoint.

L{serve} is the only path from an HTTP request to a handler: it checks the
C{Accept} and C{Content-Type} headers, parses and validates the JSON body
against the endpoint's schema, checks names in the URI, calls the handler, and
renders its result or its error.  Handlers therefore see only valid input and
return plain values.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from comet.names import NAME_PATTERN, check_name
from comet.web._errors import HTTPError, classify, error_body
from comet.web._table import JSON, Endpoint, Response

#: URI parameters that are client-chosen names and follow the name rule.
NAME_PARAMS = frozenset({"name", "cluster", "vm", "pool", "volume", "snapshot", "zvol"})

_validators: dict[int, Draft202012Validator] = {}


def ecma_pattern(pattern: str) -> re.Pattern:
    """
    C{pattern} (a JSON Schema C{pattern}, ECMA-262 syntax) compiled so that
    Python matches what ECMA-262 matches: there, C{$} is the end of the input
    only, while Python's C{$} also matches before a final newline, so that
    C{"lab\\n"} would pass C{^...$}.  A C{$} outside a character class becomes
    C{\\Z}.
    """
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append("\\Z" if c == "$" and not in_class else c)
        i += 1
    return re.compile("".join(out))


_compiled: dict[str, re.Pattern] = {}


def _pattern(validator, pattern, instance, schema):
    if not validator.is_type(instance, "string"):
        return
    compiled = _compiled.get(pattern)
    if compiled is None:
        compiled = _compiled[pattern] = ecma_pattern(pattern)
    if compiled.search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: Draft 2020-12 with C{pattern} as ECMA-262 reads it (what the OpenAPI
#: document promises, and what schemathesis generates against).
_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


def _accepts(accept: str, media_type: str) -> bool:
    """Whether an C{Accept} header value admits C{media_type}."""
    major = media_type.split("/")[0]
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        rng = parts[0].lower()
        q = 1.0
        for p in parts[1:]:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0 and rng in ("*/*", f"{major}/*", media_type):
            return True
    return False


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def _field_of(error: ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "(body)"


def describe(error: ValidationError) -> str:
    """A sentence that names the field a schema error is about."""
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = _field_of(error)
        prefix = "" if where == "(body)" else f"{where}."
        # repr: a field name is the client's text, line breaks and quotes included.
        return "unknown field " + ", ".join(repr(f"{prefix}{name}") for name in extra)
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return f"field '{missing}' is required"
    if error.validator == "pattern" and error.validator_value == NAME_PATTERN:
        return (
            f"field '{_field_of(error)}': {error.instance!r} is not a valid name"
            f" (it must match {NAME_PATTERN})"
        )
    # A described choice (which fields go together) says more than the
    # failure of one of its branches that best_match may have picked.
    choice = error
    while choice is not None:
        if choice.validator in ("oneOf", "anyOf") and choice.schema.get("description"):
            return choice.schema["description"]
        choice = choice.parent
    if error.validator == "pattern" and error.schema.get("description"):
        return f"field '{_field_of(error)}': {error.schema['description']}, not {error.instance!r}"
    return f"field '{_field_of(error)}': {error.message}"


def validate(schema, body: Any) -> None:
    """Raise a 400 naming the field if C{body} does not follow C{schema}."""
    validator = _validators.get(id(schema))
    if validator is None:
        validator = _validators[id(schema)] = _Validator(schema)
    error = best_match(validator.iter_errors(body))
    if error is not None:
        raise HTTPError(400, describe(error))


def _read_body(request: IRequest, endpoint: Endpoint) -> Any:
    if endpoint.schema is None:
        # GET takes no body; one sent anyway is ignored, as HTTP allows.
        return None
    raw = request.content.read() if request.content is not None else b""
    content_type = (_header(request, b"content-type") or "").split(";")[0].strip().lower()
    if content_type != JSON:
        # Even without a body: a page of another site can make a browser send
        # a bodiless or text/plain POST with the user's credentials, but not
        # one that says application/json (comet.web._origin).
        raise HTTPError(
            415, f"a {endpoint.method} needs Content-Type: {JSON}"
            f" (an empty body included), not {content_type or 'none'}"
        )
    if not raw.strip():
        # An action or DELETE without a body means "no parameters".
        return {}
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_not_json, parse_float=_number)
        if _depth(body) > MAX_DEPTH:
            raise HTTPError(400, f"the request body nests deeper than {MAX_DEPTH} levels")
        # An escaped lone surrogate (C{"\\ud800"}) parses, but is no character:
        # nothing could store or answer it (I-JSON, RFC 7493, forbids it).
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPError(
            400, "the request body is not valid JSON: a string holds a lone surrogate (\\uD800-\\uDFFF)"
        ) from None
    except RecursionError:
        # json's decoder recurses once per level: a body of "[[[[…" ends it.
        raise HTTPError(400, f"the request body nests deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise HTTPError(400, f"the request body is not valid JSON: {e}") from None
    return body


#: How deep arrays and objects may nest in a request body (ours need 3); the
#: schema validator, like the decoder, recurses once per level.
MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """How deep C{value} nests (a scalar: 0), without recursing."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            level += 1
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                stack.extend((child, level) for child in item)
    return deepest


def _number(literal: str) -> float | int:
    """
    A JSON number with a fraction or exponent: an C{int} when its value is
    whole.  JSON Schema counts C{25.0} as an integer, so the document lets a
    client send it where an integer is asked; the models, which check
    C{isinstance(..., int)} and hand values to libvirt and ZFS, see the
    integer (schemathesis: C{"capacity": 25740.0} was valid and refused).
    """
    value = float(literal)
    return int(value) if value.is_integer() else value


def _not_json(constant: str):
    # Python's json reads NaN and Infinity; JSON has no such numbers, and a NaN
    # passes every minimum and maximum of a schema.
    raise ValueError(f"{constant} is not a JSON number")


def _check_params(params: dict[str, Any]) -> None:
    for key, value in params.items():
        if key in NAME_PARAMS and not check_name(value):
            raise HTTPError(400, f"{value!r} is not a valid name (it must match {NAME_PATTERN})")


#: Made once: C{json.dumps} with any option builds a new encoder per call.
#: Every JSON answer is its C{encode}'s text (L{comet.web._listing} too).
ENCODER = json.JSONEncoder(ensure_ascii=False)


def _watch_disconnect(request: IRequest) -> list:
    """
    A list that is empty while the client is connected, and not once it went
    away (C{if gone:}).  Twisted closes the request's body then, so nothing
    may read or answer it any more.
    """
    gone: list = []
    notify = getattr(request, "notifyFinish", None)
    if notify is not None:
        notify().addErrback(gone.append)
    return gone


def render_error(request: IRequest, code: int, reason: str, headers=None) -> bytes:
    request.setResponseCode(code)
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return error_body(code, reason)


def _render(request: IRequest, result: Any) -> Any:
    if IResource.providedBy(result):
        # A resource that answers the request itself (the console's websocket).
        return result
    if not isinstance(result, Response):
        result = Response(body=result)
    request.setResponseCode(result.code)
    for name, value in result.headers.items():
        request.setHeader(name, value)
    if result.raw is not None:
        request.setHeader(b"content-type", result.content_type.encode("ascii"))
        return result.raw
    if result.code == 204 or (result.body is None and result.code in (303, 304)):
        return b""
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    if result.encoded is not None:
        return result.encoded
    return ENCODER.encode(result.body).encode("utf-8")


async def serve(
    api: Any, endpoint: Endpoint, request: IRequest, params: dict, guard: Any = None
) -> bytes:
    """
    Answer C{request} with C{endpoint}: the whole contract, in one place.

    @param guard: a L{comet.web._auth.Guard}: credentials (401), the role the
        endpoint needs (403) and the body size (413) are checked before
        anything else, and a change request is written to the audit log.
    """
    result = None
    gone = _watch_disconnect(request)
    try:
        if guard is not None:
            await guard.admit(request, endpoint)
        if gone:
            # The client left while its credentials were checked: nothing is
            # begun for no one (a change, once begun, runs to its end).
            return b""
        accept = _header(request, b"accept")
        if accept and not _accepts(accept, endpoint.produces):
            raise HTTPError(406, f"this resource answers {endpoint.produces} only")
        _check_params(params)
        body = _read_body(request, endpoint)
        if endpoint.schema is not None:
            validate(endpoint.schema, body)
        result = await endpoint.handler(api, request, body, **params)
        answer = _render(request, result)
    except CancelledError:
        # The client went away and Klein cancelled the view: there is no one
        # to answer, and it is no bug (it was logged as a 500, then written
        # to the closed request; found by schemathesis' ignored_auth check,
        # whose clients give up during the failed-login throttle).
        raise
    except Exception:
        code, reason, headers = classify(Failure())
        if gone:
            return b""   # no one to answer (a bug was logged all the same)
        answer = render_error(request, code, reason, headers)
    if guard is not None:
        await guard.record(request, getattr(request, "comet_identity", None), result, endpoint)
    return answer
