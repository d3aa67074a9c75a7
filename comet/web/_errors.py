"""
The one place where a failure becomes an HTTP status and a JSON error body.

Every error a client sees has the body C{{"code": 409, "error": "conflict",
"reason": "..."}}.  Domain errors (L{comet.errors}) carry a reason written for
the operator; anything else is a bug, logged with its traceback and answered
with a generic 500 whose reason reveals nothing of the inside.
"""

from __future__ import annotations

import json

from twisted.logger import Logger
from twisted.python.failure import Failure

from comet import errors
from comet.web.paths import PATHS

log = Logger()

#: Status code -> the short C{error} word of the body.
ERROR_WORDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
}

_DOMAIN = [
    (errors.InvalidInput, 400),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Unavailable, 503),
    (errors.BackendError, 502),
]


class HTTPError(Exception):
    """A failure of the request itself (media type, JSON), with its status code."""

    def __init__(self, code: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.headers = headers or {}


def error_body(code: int, reason: str) -> bytes:
    """The JSON error body for status C{code}."""
    word = ERROR_WORDS.get(code, "error")
    return json.dumps({"code": code, "error": word, "reason": reason}).encode("utf-8")


def classify(failure: Failure) -> tuple[int, str, dict[str, str]]:
    """
    Map a failure to C{(status, reason, headers)}.  Unknown exceptions are
    logged here, with their traceback, and become a generic 500.
    """
    error = failure.value
    if isinstance(error, HTTPError):
        return error.code, error.reason, error.headers
    if isinstance(error, errors.Busy) and error.task_id is not None:
        return 409, f"{error.reason} (task {PATHS.href('task', id=error.task_id)})", {}
    for cls, code in _DOMAIN:
        if isinstance(error, cls):
            return code, error.reason, {}
    log.failure("internal error while serving a request", failure)
    return 500, "internal error; the daemon's log has the details", {}
