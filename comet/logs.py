"""
JSON-lines logs (C{[log] format = "json"}) and the per-request event.

With the JSON format the daemon's log observer is Twisted's own
C{jsonFileLogObserver} on standard output (the journal under systemd), one
JSON object a line, without the record separator Twisted puts before each by
default, so that C{jq} and log shippers read it as JSON lines.  C{twistd}
takes it from the application (the L{ILogObserver} component
L{CometService.setServiceParent} sets); a C{--logger} on twistd's command
line still wins.

Each API request then also yields one event (namespace L{REQUESTS}) once its
answer is sent: C{request_id} (also the answer's C{X-Request-Id} header),
C{user}, C{route} (the route's pattern, never the raw path, which may carry
names a log need not keep), C{method}, C{status} and C{duration} (seconds).
Making the event is a few attribute reads; writing it is the observer's job.
Neither headers nor bodies are logged, so no token or password is.  With
the text format there is no such event: Twisted's access log was dropped for
its cost (L{comet.web._site.APISite}), and the text log stays as it was.
"""

from __future__ import annotations

import itertools
import os
import sys
from typing import IO

from twisted.logger import ILogObserver, Logger, jsonFileLogObserver

#: The namespace of the per-request events.
REQUESTS = "comet.requests"


def json_observer(out: IO[str] | None = None) -> ILogObserver:
    """
    Twisted's JSON observer on C{out} (by default this process's standard
    output as it is now: twistd later points C{sys.stdout} into the log
    itself), one object a line.
    """
    if out is None:
        out = sys.stdout
    return jsonFileLogObserver(out, recordSeparator="")


class RequestLog:
    """
    Emits the event of each answered request (see the module docstring).
    The request id is this process's random prefix and a counter: unique
    within the process's log, and no system call per request.
    """

    def __init__(self, logger: Logger | None = None):
        self._log = logger if logger is not None else Logger(namespace=REQUESTS)
        self._prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def answered(self, request_id: str, user: str | None, route: str, method: str,
                 status: int, duration: float) -> None:
        self._log.info(
            "{method} {route} {status} in {duration:.4f} s (request {request_id}, user {user})",
            request_id=request_id, user=user, route=route, method=method, status=status,
            duration=round(duration, 6))
