"""Tests for L{comet.remote._observed}."""

from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from comet.remote._observed import Observed


class ObservedTests(SynchronousTestCase):
    """Each observer gets the outcome on a Deferred of its own."""

    def test_before_and_after(self):
        o = Observed()
        early = o.observe()
        o.settle(b"out")
        late = o.observe()
        self.assertEqual((self.successResultOf(early), self.successResultOf(late)),
                         (b"out", b"out"))
        self.assertTrue(o.settled)

    def test_independent(self):
        """One observer's callbacks do not change what another gets."""
        o = Observed()
        a, b = o.observe(), o.observe()
        a.addCallback(lambda _: "changed")
        o.settle("result")
        self.assertEqual(self.successResultOf(b), "result")

    def test_failure(self):
        o = Observed()
        d = o.observe()
        o.settle(Failure(ValueError("x")))
        self.failureResultOf(d, ValueError)
        self.failureResultOf(o.observe(), ValueError)

    def test_unobserved_failure_is_quiet(self):
        """A failure nobody observes is not an unhandled error."""
        Observed().settle(Failure(ValueError("nobody asked")))
        self.assertEqual(self.flushLoggedErrors(ValueError), [])

    def test_cancel(self):
        """Cancelling one observer calls its canceller and leaves the others."""
        o = Observed()
        cancelled = []
        a = o.observe(cancelled.append)
        b = o.observe()
        a.cancel()
        self.failureResultOf(a, CancelledError)
        self.assertEqual(len(cancelled), 1)
        o.settle(1)
        self.assertEqual(self.successResultOf(b), 1)
