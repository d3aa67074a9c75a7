"""
Domain errors: what went wrong, in Comet's own words.

The model and the adapters raise these; exactly one place in the web layer
(``comet.web._errors``) turns them into HTTP status codes and JSON bodies, so no
module below the web layer knows anything about HTTP.
"""


class CometError(Exception):
    """
    Base class of every error a client may be told about.

    @ivar reason: a sentence for the operator, safe to show to any client.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    def said(self) -> str:
        """The reason as a text written outside the web layer (a task's message) gives it."""
        return self.reason


class InvalidInput(CometError):
    """The request asks for something that can never be valid (a bad name, a bad value)."""


class NotFound(CometError):
    """A resource the request names does not exist."""


class Conflict(CometError):
    """The request is valid but not in the current state (a name taken, a VM running)."""


class Busy(Conflict):
    """
    The object is locked by an operation under way.  C{task_id} is the task
    that operation runs as, if any: the model gives its id, and the web layer
    (which alone makes URIs) names it in the reason as a link.
    """

    def __init__(self, reason: str, task_id: int | None = None):
        super().__init__(reason)
        self.task_id = task_id

    def said(self) -> str:
        """The reason and the task's id: a task message cannot link to it."""
        return self.reason if self.task_id is None else f"{self.reason} (task {self.task_id})"


class Unavailable(CometError):
    """
    A backend (a compute host, a storage server) that the request needs does not
    answer.  The reason names which one; the rest of the API keeps working.
    """


class BackendError(CometError):
    """
    A backend (a compute host, a storage server) answered, and refused: the
    request was valid, the backend could not do it.  The reason carries the
    backend's own words.
    """


class CommandFailed(BackendError):
    """
    A command on a storage server ran and exited with an error.

    @ivar argv: the command as an argument list.
    @ivar code: its exit code.
    @ivar stderr: what it wrote on standard error (decoded, stripped).
    """

    def __init__(self, argv, code: int, stderr: str, server: str = ""):
        self.argv = list(argv)
        self.code = code
        self.stderr = stderr
        self.server = server
        where = f" on {server}" if server else ""
        super().__init__(
            f"command {' '.join(self.argv[:3])}{where} failed (exit {code}): {stderr}"
        )
