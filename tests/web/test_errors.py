"""
Tests for L{comet.web._errors}: the one place where a failure becomes a
status and a JSON error body.
"""

from __future__ import annotations

import json

from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from comet import errors
from comet.web._errors import classify, error_body


def _classify(error: BaseException):
    try:
        raise error
    except BaseException:
        return classify(Failure())


class ClassifyTests(TestCase):
    def test_domain_errors(self):
        """Each domain error has its status and keeps its reason."""
        for error, code in [
            (errors.InvalidInput("bad"), 400),
            (errors.NotFound("gone"), 404),
            (errors.Conflict("taken"), 409),
            (errors.Unavailable("host 'h1' does not answer"), 503),
            (errors.BackendError("zfs said no"), 502),
        ]:
            self.assertEqual(_classify(error), (code, error.reason, {}))

    def test_busy_names_its_task_as_a_link(self):
        """
        The model gives a busy object's task as an id; the 409 names it by
        its URI, which only the web layer makes.
        """
        busy = errors.Busy("VM 'web' is busy: it is stopping", 7)
        self.assertEqual(_classify(busy),
                         (409, "VM 'web' is busy: it is stopping (task /tasks/7)", {}))
        self.assertEqual(busy.said(), "VM 'web' is busy: it is stopping (task 7)")

    def test_busy_without_a_task(self):
        busy = errors.Busy("VM 'web' is busy: it is stopping")
        self.assertEqual(_classify(busy), (409, "VM 'web' is busy: it is stopping", {}))
        self.assertEqual(busy.said(), busy.reason)

    def test_anything_else_reveals_nothing(self):
        """A bug is a generic 500: its text stays in the log."""
        code, reason, _ = _classify(KeyError("secret inner detail"))
        self.assertEqual(code, 500)
        self.assertNotIn("secret", reason)
        self.flushLoggedErrors(KeyError)

    def test_body(self):
        self.assertEqual(json.loads(error_body(409, "taken")),
                         {"code": 409, "error": "conflict", "reason": "taken"})
